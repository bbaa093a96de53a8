"""Users (admin): list accounts, add one, reset a password, change a role, disable or enable one.

Every change is audited; the table is drawn after the forms, so an added or changed account shows at once."""

import streamlit as st

from medlabel.errors import MedlabelError
from portal.auth import require_role
from portal.resources import app_context
from portal.timefmt import when
from services.accounts import add_user, list_users, set_active, set_password, set_role

ROLES = ["reader", "lead", "clinician", "admin"]
NOTICE = "users_page_notice"

admin = require_role("admin")
ctx = app_context()
st.title("Users")
if NOTICE in st.session_state:
    st.success(st.session_state.pop(NOTICE))


def _done(message: str) -> None:
    st.session_state[NOTICE] = message
    st.rerun()


left, right = st.columns(2)
with left, st.form("add_user", clear_on_submit=True):
    st.subheader("Add a user")
    username = st.text_input("Username")
    display_name = st.text_input("Display name")
    role = st.selectbox("Role", ROLES)
    password = st.text_input("Initial password", type="password")
    if st.form_submit_button("Add user"):
        try:
            created = add_user(ctx, username, password, role, display_name=display_name, actor_id=admin.id)
        except MedlabelError as exc:
            st.error(str(exc))
        else:
            _done(f"Added {created.username} ({created.role}).")

rows = list_users(ctx)
others = [u for u in rows if u.id != admin.id]
with right:
    st.subheader("Change an account")
    if not others:
        st.caption("No other accounts yet.")
    else:
        by_name = {u.username: u for u in others}
        target = by_name[st.selectbox("Account", list(by_name), key="users_target")]
        with st.form("change_role", border=False):
            new_role = st.selectbox("Role", ROLES, index=ROLES.index(target.role), key=f"users_role_{target.id}")
            if st.form_submit_button("Change role"):
                try:
                    changed = set_role(ctx, target.username, new_role, actor_id=admin.id)
                except MedlabelError as exc:
                    st.error(str(exc))
                else:
                    _done(f"{changed.username} is now {changed.role}; their open sessions were ended.")
        with st.form("reset_password", clear_on_submit=True, border=False):
            new_password = st.text_input("New password", type="password", key=f"users_pw_{target.id}")
            if st.form_submit_button("Reset password"):
                try:
                    set_password(ctx, target.username, new_password, actor_id=admin.id)
                except MedlabelError as exc:
                    st.error(str(exc))
                else:
                    _done(f"Password of {target.username} reset; their open sessions were ended.")
        label = "Disable account" if target.is_active else "Enable account"
        if st.button(label, key="toggle_active"):
            set_active(ctx, target.username, not target.is_active, actor_id=admin.id)
            _done(f"{target.username} {'disabled' if target.is_active else 'enabled'}.")

st.subheader("Accounts")
st.dataframe(
    [{"Username": u.username, "Name": u.display_name, "Role": u.role,
      "Active": u.is_active, "Last sign-in": when(u.last_login_at) if u.last_login_at else "never"} for u in rows],
    hide_index=True, width="stretch",
)
