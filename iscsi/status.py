"""What an iSCSI Login Response status means (RFC 7143 §11.13.5), in one table.

Each (Status-Class, Status-Detail) pair has a name, a :class:`StatusCause` (what
a booting box makes of it: its values are those of the boot agent's login
causes), a plain-language text and a fix.  The initiator's
:class:`~iscsiboot.iscsi.login.LoginFailed`, the doctor and the agent's native
login all read this table.  Pure data, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


class Code(enum.IntEnum):
    """The status codes of RFC 7143 §11.13.5, as ``class << 8 | detail``."""

    SUCCESS = 0x0000
    MOVED_TEMPORARILY = 0x0101
    MOVED_PERMANENTLY = 0x0102
    INITIATOR_ERROR = 0x0200
    AUTHENTICATION_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302


class StatusCause(enum.Enum):
    """What a status means for a boot; the values are the agent's login causes."""

    OK = "ok"
    AUTH = "auth"  # the credentials: CHAP user name or secret
    NOT_FOUND = "target-not-found"  # no such target (tgt also says so to an initiator its ACL refuses)
    REJECTED = "login-rejected"  # the target refuses this initiator or request for good
    OTHER = "other"  # redirects and target errors: another try may pass


@dataclass(frozen=True)
class Status:
    """The meaning of one status: ``code`` is None for a detail the RFC does not define."""

    status_class: int
    status_detail: int
    code: Code | None
    name: str
    cause: StatusCause
    text: str
    fix: str

    @property
    def hex(self) -> str:
        return f"0x{self.status_class:02x}{self.status_detail:02x}"


_ROWS: tuple[tuple[Code, str, StatusCause, str, str], ...] = (
    (Code.SUCCESS, "success", StatusCause.OK, "the login succeeded", ""),
    (
        Code.MOVED_TEMPORARILY,
        "target moved temporarily",
        StatusCause.OTHER,
        "the target is temporarily reachable at another portal (it answered with a redirect)",
        "follow TargetAddress, or point the settings at the new portal",
    ),
    (
        Code.MOVED_PERMANENTLY,
        "target moved permanently",
        StatusCause.OTHER,
        "the target now lives at another portal (permanent redirect)",
        "change the portal in the boot settings to the new address",
    ),
    (
        Code.INITIATOR_ERROR,
        "initiator error",
        StatusCause.REJECTED,
        "the target refused the login request as malformed or not allowed",
        "check the initiator name and target name for typos",
    ),
    (
        Code.AUTHENTICATION_FAILURE,
        "authentication failure",
        StatusCause.AUTH,
        "the target did not accept the CHAP credentials (wrong user name or secret, "
        "or CHAP missing while the target requires it)",
        "give the CHAP user name and secret the target has for this initiator",
    ),
    (
        Code.AUTHORIZATION_FAILURE,
        "authorization failure",
        StatusCause.REJECTED,
        "the target does not allow this initiator: its ACL does not include this initiator name or address",
        "add the initiator name to the target's ACL, or use the initiator name the target expects",
    ),
    (
        Code.NOT_FOUND,
        "target not found",
        StatusCause.NOT_FOUND,
        "no target with this name exists at this portal",
        "check the target name (IQN) against what discovery lists",
    ),
    (
        Code.TARGET_REMOVED,
        "target removed",
        StatusCause.NOT_FOUND,
        "the target existed but has been removed from this portal",
        "recreate the target or use another one",
    ),
    (
        Code.UNSUPPORTED_VERSION,
        "unsupported version",
        StatusCause.REJECTED,
        "the target does not speak this iSCSI protocol version",
        "update the target",
    ),
    (
        Code.TOO_MANY_CONNECTIONS,
        "too many connections",
        StatusCause.REJECTED,
        "the target refuses more connections for this session (or the ISID is in use)",
        "close other sessions of this initiator",
    ),
    (
        Code.MISSING_PARAMETER,
        "missing parameter",
        StatusCause.REJECTED,
        "the target needs a login key that was not sent",
        "see the target's log for the missing key",
    ),
    (
        Code.CANT_INCLUDE_IN_SESSION,
        "cannot include in session",
        StatusCause.REJECTED,
        "the target cannot add this connection to the session",
        "retry with a new session",
    ),
    (
        Code.SESSION_TYPE_NOT_SUPPORTED,
        "session type not supported",
        StatusCause.REJECTED,
        "the target does not support this session type (Normal or Discovery)",
        "log in to the target directly instead of through discovery",
    ),
    (
        Code.SESSION_DOES_NOT_EXIST,
        "session does not exist",
        StatusCause.REJECTED,
        "the target knows no session with this identifier",
        "log in afresh",
    ),
    (
        Code.INVALID_DURING_LOGIN,
        "invalid request during login",
        StatusCause.REJECTED,
        "the target found a request invalid during the login",
        "see the target's log",
    ),
    (
        Code.TARGET_ERROR,
        "target error",
        StatusCause.OTHER,
        "the target failed internally (or the target is offline)",
        "check the target's state and log",
    ),
    (
        Code.SERVICE_UNAVAILABLE,
        "service unavailable",
        StatusCause.OTHER,
        "the target is temporarily unable to serve (offline or starting)",
        "bring the target online and retry",
    ),
    (
        Code.OUT_OF_RESOURCES,
        "out of resources",
        StatusCause.OTHER,
        "the target lacks resources for another session",
        "free sessions on the target or retry later",
    ),
)

#: (class, detail) -> meaning, for every status the RFC defines.
STATUS: Mapping[tuple[int, int], Status] = MappingProxyType(
    {
        (code >> 8, code & 0xFF): Status(code >> 8, code & 0xFF, code, name, cause, text, fix)
        for code, name, cause, text, fix in _ROWS
    }
)

# A detail the RFC does not define means what its class means.
_CLASS: Mapping[int, tuple[str, StatusCause, str, str]] = MappingProxyType(
    {
        1: (
            "redirection",
            StatusCause.OTHER,
            "the target sent the initiator elsewhere",
            "follow the redirect",
        ),
        2: (
            "initiator error",
            StatusCause.REJECTED,
            "the target refused the login because of the initiator's request",
            "check names",
        ),
        3: (
            "target error",
            StatusCause.OTHER,
            "the target failed to serve the login",
            "check the target's state and log",
        ),
    }
)
_UNKNOWN = (
    "unknown status",
    StatusCause.OTHER,
    "the target answered with an unknown status class",
    "see the target's log",
)


def status_of(status_class: int, status_detail: int) -> Status:
    """The meaning of any status; a detail the table lacks falls back to its class."""
    known = STATUS.get((status_class, status_detail))
    if known is not None:
        return known
    name, cause, text, fix = _CLASS.get(status_class, _UNKNOWN)
    return Status(
        status_class, status_detail, None, f"{name} (detail 0x{status_detail:02x})", cause, text, fix
    )
