"""What the agent hands the keeper: the sessions and how to log each in again (pure).

The configuration goes as one JSON line through a private pipe; it carries
the CHAP secrets in clear (the keeper holds them in locked memory), never to a
log or a file.  Targets use the boot model's JSON form
(:func:`iscsiboot.model.target_to_dict`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from iscsiboot.errors import ParseError
from iscsiboot.model import Target, from_dict, target_to_dict

MAX_CONFIG = 64 * 1024
DEFAULT_RECOVERY_TIMEOUT = 600  # seconds: rides out a NAS reboot
PING = 5  # seconds between NOP-Outs, and for each answer, when a keeper recovers


@dataclass(frozen=True)
class KeptSession:
    """One kernel session the agent created: its ids and what its login needs again."""

    sid: int
    cid: int
    host_no: int
    target: Target  # the portal logged in to (address resolved), CHAP included
    initiator: str
    isid: bytes  # the same ISID again: the target reinstates the session

    def to_dict(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "cid": self.cid,
            "host_no": self.host_no,
            "target": target_to_dict(self.target, show_secrets=True),
            "initiator": self.initiator,
            "isid": self.isid.hex(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> KeptSession:
        if not isinstance(data, dict):
            raise ParseError("a kept session is not an object")
        try:
            (target,) = from_dict({"targets": [data["target"]]}).targets
            isid = bytes.fromhex(str(data["isid"]))
            if len(isid) != 6:
                raise ValueError("an ISID has 6 bytes")
            return cls(
                int(data["sid"]), int(data["cid"]), int(data["host_no"]), target, str(data["initiator"]), isid
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ParseError(f"a kept session is incomplete: {exc}") from None


@dataclass(frozen=True)
class KeeperConfig:
    sessions: tuple[KeptSession, ...]
    recovery_timeout: int = DEFAULT_RECOVERY_TIMEOUT  # negative: for ever
    ping: int = PING
    volumes: tuple[tuple[str, str], ...] = ()  # (role, device), e.g. ("Storage", "/dev/sda2"), for the log

    def to_json(self) -> str:
        return json.dumps(
            {
                "sessions": [s.to_dict() for s in self.sessions],
                "recovery_timeout": self.recovery_timeout,
                "ping": self.ping,
                "volumes": [list(v) for v in self.volumes],
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> KeeperConfig:
        if len(text) > MAX_CONFIG:
            raise ParseError(f"the keeper's configuration is longer than {MAX_CONFIG} bytes")
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            return cls(
                tuple(KeptSession.from_dict(s) for s in data["sessions"]),
                int(data["recovery_timeout"]),
                int(data["ping"]),
                tuple((str(role), str(dev)) for role, dev in data.get("volumes", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ParseError(f"the keeper's configuration is not valid: {exc}") from None


def parse_timeout(value: str) -> int:
    """``iscsiboot.recovery_timeout``: seconds (1-86400), or ``never`` (-1) (pure)."""
    if value in ("never", "off"):
        return -1
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 86400:
        raise ValueError(f"{value!r} is not 1-86400 seconds or never")
    return int(value)
