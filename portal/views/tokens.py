"""API tokens (every role): create a personal token (shown once), see and revoke one's tokens.

Administrators see everyone's tokens and may revoke any. docs/api.md says how a token is used.
"""

import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.resources import app_context
from services.api_tokens import (
    DEFAULT_EXPIRY_DAYS,
    MAX_EXPIRY_DAYS,
    create_token,
    list_tokens,
    revoke_token,
    scopes_for_role,
)

user = require_role()
ctx = app_context()
st.title("API tokens")
st.caption("A token lets another system (a viewer, a script) call the medlabel API as you, with the scopes you "
           "give it. It is shown once; only its hash is kept. See docs/api.md.")

NEW, FLASH = "tokens_new_secret", "tokens_flash"
if FLASH in st.session_state:
    st.success(st.session_state.pop(FLASH))
with st.form("create_token", clear_on_submit=True):
    st.subheader("Create a token")
    name = st.text_input("Name", placeholder="e.g. viewer in reading room 3")
    allowed = scopes_for_role(user.role)
    scopes = st.multiselect("Scopes", allowed, default=[allowed[0]] if allowed else [])
    days = st.number_input("Expires after (days)", min_value=1, max_value=MAX_EXPIRY_DAYS, value=DEFAULT_EXPIRY_DAYS)
    if st.form_submit_button("Create token"):
        try:
            new = create_token(ctx, user.username, name, tuple(scopes), expires_days=int(days), actor_id=user.id)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            st.session_state[NEW] = (new.token.id, new.secret)

if NEW in st.session_state:
    token_id, secret = st.session_state[NEW]
    st.success(f"Token {token_id} created. Copy it now: it will not be shown again.")
    st.code(secret, language=None)
    if st.button("I have copied it"):
        del st.session_state[NEW]
        st.rerun()

tokens = list_tokens(ctx, actor_id=user.id)
st.subheader("Everyone's tokens" if user.role == "admin" else "Your tokens")
if not tokens:
    st.info("No tokens yet.")
else:
    st.dataframe([{"Id": t.id, "User": t.user, "Name": t.name, "Starts with": t.prefix, "Scopes": ", ".join(t.scopes),
                   "State": t.state, "Expires": t.expires_at, "Last used": t.last_used_at, "Created": t.created_at}
                  for t in tokens], hide_index=True, width="stretch")
    live = [t for t in tokens if t.state == "active"]
    if live:
        choice = st.selectbox("Token to revoke", [f"{t.id}: {t.name} ({t.user})" for t in live], key="revoke_choice")
        if st.button("Revoke token", type="primary"):
            token_id = int(choice.split(":", 1)[0])
            try:
                revoked = revoke_token(ctx, token_id, actor_id=user.id)
            except MedlabelError as exc:
                st.error(str(exc))
            else:
                st.session_state[FLASH] = f"Token {revoked.id} revoked: it stops working now."
                st.rerun()
