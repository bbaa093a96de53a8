"""Users (admin): list accounts, add one, disable or enable one."""

import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.resources import app_context
from portal.timefmt import when
from services.accounts import add_user, list_users, set_active

admin = require_role("admin")
ctx = app_context()
st.title("Users")

rows = list_users(ctx)
st.dataframe(
    [{"Username": u.username, "Name": u.display_name, "Role": u.role,
      "Active": u.is_active, "Last sign-in": when(u.last_login_at) if u.last_login_at else "never"} for u in rows],
    hide_index=True, width="stretch",
)

left, right = st.columns(2)
with left, st.form("add_user", clear_on_submit=True):
    st.subheader("Add a user")
    username = st.text_input("Username")
    display_name = st.text_input("Display name")
    role = st.selectbox("Role", ["reader", "lead", "clinician", "admin"])
    password = st.text_input("Initial password", type="password")
    if st.form_submit_button("Add user"):
        try:
            created = add_user(ctx, username, password, role, display_name=display_name, actor_id=admin.id)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            st.success(f"Added {created.username} ({created.role}).")

with right:
    st.subheader("Disable or enable")
    others = [u for u in rows if u.id != admin.id]
    if others:
        choice = st.selectbox("Account", [u.username for u in others], key="toggle_user")
        target = next(u for u in others if u.username == choice)
        label = "Disable account" if target.is_active else "Enable account"
        if st.button(label, key="toggle_active"):
            set_active(ctx, target.username, not target.is_active, actor_id=admin.id)
            st.rerun()
