"""What the agent and the NBD daemon say to each other over two pipes (pure).

The agent writes one :class:`DaemonConfig` (JSON) to the daemon's configuration
pipe and closes it; the daemon answers with one status line on its status
pipe: :class:`LoginFailed`, :class:`Ready` or :class:`Failed`.  The
configuration carries the CHAP secrets in clear: it goes only through that
private pipe, never to a log or a file.  Status lines carry no secret.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from iscsiboot.agent.backends.result import Cause
from iscsiboot.errors import ParseError
from iscsiboot.model import Chap
from iscsiboot.secret import Secret

MAX_LINE = 64 * 1024  # a configuration or a status line is far shorter


def _chap_out(chap: Chap | None) -> dict[str, str] | None:
    return None if chap is None else {"username": chap.username, "password": chap.password.reveal()}


def _chap_in(data: object) -> Chap | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ParseError("a CHAP entry is not an object")
    return Chap(str(data["username"]), Secret(str(data["password"])))


def _object(text: str | bytes, what: str) -> dict[str, Any]:
    if len(text) > MAX_LINE:
        raise ParseError(f"the {what} is longer than {MAX_LINE} bytes")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ParseError(f"the {what} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ParseError(f"the {what} is not a JSON object")
    return data


@dataclass(frozen=True)
class DaemonConfig:
    """One target's LUN to serve as /dev/nbdN."""

    host: str
    port: int
    target: str
    lun: int | None  # None: the target's lowest disk LUN, as the kernel path picks it
    initiator: str
    chap: Chap | None = None
    reverse_chap: Chap | None = None
    isid: bytes | None = None  # None: a new random ISID (reported back in Ready)
    device: int | None = None  # the nbd index; None: the first free one
    timeout: float = 10.0  # seconds for each login and each command
    attach: bool = True  # False: stop after the login, READ CAPACITY and the block limits

    def to_json(self) -> str:
        """One line for the configuration pipe (the secrets in clear)."""
        return json.dumps(
            {
                "host": self.host,
                "port": self.port,
                "target": self.target,
                "lun": self.lun,
                "initiator": self.initiator,
                "chap": _chap_out(self.chap),
                "reverse_chap": _chap_out(self.reverse_chap),
                "isid": None if self.isid is None else self.isid.hex(),
                "device": self.device,
                "timeout": self.timeout,
                "attach": self.attach,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> DaemonConfig:
        data = _object(text, "NBD daemon configuration")
        try:
            isid = data.get("isid")
            device = data.get("device")
            lun = data.get("lun")
            return cls(
                host=str(data["host"]),
                port=int(data["port"]),
                target=str(data["target"]),
                lun=None if lun is None else int(lun),
                initiator=str(data["initiator"]),
                chap=_chap_in(data.get("chap")),
                reverse_chap=_chap_in(data.get("reverse_chap")),
                isid=None if isid is None else bytes.fromhex(str(isid)),
                device=None if device is None else int(device),
                timeout=float(data.get("timeout", 10.0)),
                attach=bool(data.get("attach", True)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ParseError(f"the NBD daemon configuration is incomplete or wrong: {exc!r}") from None


# ---------------------------------------------------------------- status lines


class Problem(enum.Enum):
    """Why a daemon that logged in could not serve the LUN."""

    BLOCK_SIZE = "block-size"  # neither 512 nor 4096 bytes
    EMPTY = "empty-lun"  # READ CAPACITY says 0 bytes
    NO_DISK = "no-disk-lun"  # no LUN named, and the target maps no disk LUN
    CAPACITY = "capacity"  # READ CAPACITY or the block limits failed
    NO_DEVICE = "no-nbd-device"  # no /dev/nbdN (no nbd module) or none free
    ATTACH = "attach"  # the kernel refused the device's set-up
    CONFIG = "config"  # the configuration from the agent did not parse
    INTERNAL = "internal"


@dataclass(frozen=True)
class LoginFailed:
    cause: Cause
    evidence: str

    def to_json(self) -> str:
        return json.dumps({"status": "login-failed", "cause": self.cause.value, "evidence": self.evidence})


@dataclass(frozen=True)
class Ready:
    device: str | None  # /dev/nbdN; None when the daemon was told not to attach
    size: int  # bytes
    block_size: int
    trim: bool
    isid: str  # hex: the session's identity, kept over reconnects
    partitions: tuple[str, ...] = ()  # nbdNp1 ... as the kernel showed them
    lun: int = 0  # the LUN served (the one named, or the lowest disk LUN)

    def to_json(self) -> str:
        return json.dumps(
            {
                "status": "ready",
                "lun": self.lun,
                "device": self.device,
                "size": self.size,
                "block_size": self.block_size,
                "trim": self.trim,
                "isid": self.isid,
                "partitions": list(self.partitions),
            }
        )


@dataclass(frozen=True)
class Failed:
    cause: Problem
    what: str
    fix: str

    def to_json(self) -> str:
        return json.dumps({"status": "failed", "cause": self.cause.value, "what": self.what, "fix": self.fix})


Status = LoginFailed | Ready | Failed


def status_from_json(text: str | bytes) -> Status:
    """A status line as the daemon wrote it; ParseError for anything else."""
    data = _object(text, "NBD daemon status line")
    kind = data.get("status")
    try:
        if kind == "login-failed":
            return LoginFailed(Cause(data["cause"]), str(data["evidence"]))
        if kind == "ready":
            device = data["device"]
            return Ready(
                device=None if device is None else str(device),
                size=int(data["size"]),
                block_size=int(data["block_size"]),
                trim=bool(data["trim"]),
                isid=str(data["isid"]),
                partitions=tuple(str(p) for p in data.get("partitions", ())),
                lun=int(data.get("lun", 0)),
            )
        if kind == "failed":
            return Failed(Problem(data["cause"]), str(data["what"]), str(data["fix"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ParseError(f"the NBD daemon's status line is incomplete or wrong: {exc!r}") from None
    raise ParseError(f"the NBD daemon's status line has no known status ({str(kind)[:40]!r})")
