"""The one error hierarchy of medlabel.

Errors a user can cause and fix are ``MedlabelError`` subclasses; the CLI and the portal catch
``MedlabelError`` in one place each and show its message as one line, never a stack trace.
Programmer misuse raises ``ValueError`` / ``TypeError`` as usual.

    MedlabelError
    ├── ConfigError            settings, data folder, secret key
    ├── DatabaseError          unreachable database, schema newer than this code
    ├── InputError(path, reason)
    │   └── DicomReadError     a file that is not readable DICOM
    ├── NotFoundError          a named project, user, model ... does not exist
    ├── ConflictError          a name already taken, an item already claimed
    ├── AuthError              wrong credentials, disabled account, back-off in force
    └── PermissionDenied       a role may not do this
"""

from __future__ import annotations

from pathlib import Path


class MedlabelError(Exception):
    """Base class of every error a user can cause and fix."""


class ConfigError(MedlabelError):
    """Settings, the data folder or the secret key are unusable."""


class DatabaseError(MedlabelError):
    """The database cannot be reached or has a schema this code does not know."""


class InputError(MedlabelError):
    """A file or value given by the user is unusable; names the file and the problem."""

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class DicomReadError(InputError):
    """A file that is not readable DICOM (empty, truncated, wrong format, unknown codec)."""


class Busy(MedlabelError):
    """Too much work is queued in this process; the caller may retry shortly."""


class NotFoundError(MedlabelError):
    """A named object does not exist."""


class ConflictError(MedlabelError):
    """A name is already taken, or a state change collides with another one."""


class AuthError(MedlabelError):
    """Login failed: wrong credentials, disabled account, or back-off in force."""


class PermissionDenied(MedlabelError):
    """The user's role may not do this."""


__all__ = [
    "AuthError",
    "ConfigError",
    "ConflictError",
    "DatabaseError",
    "DicomReadError",
    "InputError",
    "MedlabelError",
    "NotFoundError",
    "PermissionDenied",
]
