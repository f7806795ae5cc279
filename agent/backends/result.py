"""What a login backend returns: the cause of a login's end, and the backend interface (pure)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from iscsiboot.agent.deadline import Deadline
from iscsiboot.model import Target


class Cause(enum.Enum):
    OK = "ok"
    SESSION_EXISTS = "session-exists"
    AUTH = "auth"
    NOT_FOUND = "target-not-found"
    REJECTED = "login-rejected"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    NO_DRIVER = "no-iscsi-driver"
    NO_CRC32C = "no-crc32c"
    NO_FIRMWARE = "no-ibft"
    NO_NBD = "no-nbd-device"
    UNUSABLE_LUN = "unusable-lun"
    OTHER = "other"


RETRYABLE = frozenset({Cause.REFUSED, Cause.TIMEOUT, Cause.UNREACHABLE, Cause.OTHER})
# Logging in again to a session that was up (the keeper's recovery, the NBD daemon's
# reconnect): only a refusal of the credentials slows the retries down.  A target that is
# "not found" or rejects the login right after coming back is still restoring its
# configuration (tgtd and LIO listen before their targets exist), so it gets the fast pace.
SLOW_RELOGIN = frozenset({Cause.AUTH})

# What each failure means, in the words of the one-line error.
MEANING: dict[Cause, str] = {
    Cause.AUTH: "CHAP authentication failed",
    Cause.NOT_FOUND: "the target does not know this target name or refuses this initiator",
    Cause.REJECTED: "the target rejected the login",
    Cause.REFUSED: "the portal refused the connection",
    Cause.TIMEOUT: "the target did not answer in time",
    Cause.UNREACHABLE: "the portal is unreachable",
    Cause.NO_DRIVER: "the kernel has no iSCSI transport (iscsi_tcp)",
    Cause.NO_CRC32C: "the kernel lacks the crc32c algorithm that iscsi_tcp needs",
    Cause.NO_FIRMWARE: "there is no iBFT to log in from",
    Cause.NO_NBD: "the kernel has no free NBD device (nbd module)",
    Cause.UNUSABLE_LUN: "the LUN cannot be served as a block device",
    Cause.OTHER: "the login failed",
}


@dataclass(frozen=True)
class LoginResult:
    cause: Cause
    evidence: str  # the telling line of output, secrets masked
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.cause in (Cause.OK, Cause.SESSION_EXISTS)

    @property
    def retryable(self) -> bool:
        return self.cause in RETRYABLE


class LoginBackend(Protocol):
    """One way to log in; ``login`` never raises for a login failure, it returns its cause."""

    name: str

    def login(self, target: Target, initiator: str, deadline: Deadline) -> LoginResult: ...

    def login_firmware(self, deadline: Deadline) -> LoginResult: ...
