"""The Streamlit portal: thin pages that call one service function and render its result."""
