"""Session-state keys, in one place."""

USER = "medlabel_user"              # services.dto.UserDTO of the signed-in user
LOGIN_ERROR = "medlabel_login_error"
