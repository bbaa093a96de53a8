"""Session-state keys, in one place."""

USER = "medlabel_user"              # services.dto.UserDTO of the signed-in user, re-read from the DB every run
SESSION_ID = "medlabel_session_id"  # id of this tab's row in auth_sessions (see portal/auth.py)
HANDOFF = "medlabel_handoff"        # one-time code the browser exchanges for its session cookie
ENDED = "medlabel_session_ended"    # why the last session ended (services.sessions.ENDED_MESSAGES key)
METHOD = "medlabel_session_method"  # "password" or "sso"
PENDING_PAGE = "medlabel_pending_page"  # (page file, query) to open once signed in through single sign-on
SSO_REFUSED = "medlabel_sso_refused"  # (sub, iat) of a single sign-on identity already refused in this tab
LOGIN_ERROR = "medlabel_login_error"
