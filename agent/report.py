# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""What the user sees: console lines, /dev/kmsg, the timeline, the JSON report.

Every line passes through :func:`iscsiboot.secret.mask` with the secrets of the
boot model, so no CHAP password reaches the console, the kernel log or a file.
The last console line of a run is ``ISCSIBOOT-RESULT <one-line JSON>``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from iscsiboot.agent.errors import failure_text
from iscsiboot.secret import Secret, mask

TYPE_CHECKING = False
if TYPE_CHECKING:
    from iscsiboot.agent.plan import NetResult

RESULT_TAG = "ISCSIBOOT-RESULT"
REPORT_PATH = "/run/iscsiboot/report.json"
TIOCOUTQ = 0x5411  # asm-generic/ioctls.h (x86_64, aarch64): the bytes a tty has still to send
DRAIN_SECONDS = 2.0  # the result line (about 2 KB) takes 0.2 s at 115200 baud, 2 s at 9600
KMSG_RECORD = 992  # the most one write to /dev/kmsg takes (the kernel's LOG_LINE_MAX): longer ones fail
PRINTK = "/proc/sys/kernel/printk"


def kernel_console_level(path: str = PRINTK) -> int | None:
    """The kernel's console log level: it prints log records of a lower level on its console."""
    try:
        with open(path) as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _line_bytes(line: str) -> bytes:
    return f"iscsiboot: {line}\n".encode(errors="replace")


def _record(line: str, level: int) -> bytes:
    """One kernel log record: the level, the agent's prefix, the line (cut to :data:`KMSG_RECORD` bytes)."""
    return (f"<{level}>".encode() + _line_bytes(line))[:KMSG_RECORD]


@dataclass(frozen=True)
class SessionInfo:
    """One iSCSI session after the login: the kernel's, or the NBD device that serves its LUN."""

    session: str  # session1 (kernel iSCSI) or nbd0 (the NBD transport)
    target: str  # the target's IQN


@dataclass
class RunResult:
    """The outcome of one run; ``phase`` is the failing phase or ``done``.

    Its JSON (:meth:`to_dict`) is the console contract: the last console line
    of a run is ``ISCSIBOOT-RESULT <that JSON on one line>`` (:data:`RESULT_TAG`),
    and whoever reads the console parses the JSON after the tag back with
    :meth:`from_json`.
    """

    ok: bool = False
    phase: str = "config"
    error: str | None = None
    cause: str | None = None
    evidence: str | None = None
    fix: str | None = None
    timeline: dict[str, float] = field(default_factory=dict)
    system: str | None = None
    storage: str | None = None
    network: NetResult | None = None
    sessions: list[SessionInfo] = field(default_factory=list)
    backend: str | None = None  # the login backend that ran: native or iscsistart
    transport: str | None = None  # how the LUN reached the kernel: kernel or nbd
    ibft: str | None = None  # where the iBFT was read (the kernel's view, an ACPI table, low memory)
    devices: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    total: float = 0.0
    clock: dict[str, float | None] = field(default_factory=dict)  # PID 1 only: see init.clock_marks

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "phase": self.phase,
            "error": self.error,
            "cause": self.cause,
            "evidence": self.evidence,
            "fix": self.fix,
            "timeline": {k: round(v, 3) for k, v in self.timeline.items()},
            "total": round(self.total, 3),
            "system": self.system,
            "storage": self.storage,
            "network": self.network.to_dict() if self.network is not None else None,
            "sessions": [{"session": s.session, "target": s.target} for s in self.sessions],
            "backend": self.backend,
            "transport": self.transport,
            "ibft": self.ibft,
            "devices": self.devices,
            "mounts": self.mounts,
            "warnings": self.warnings,
            **({"clock": self.clock} if self.clock else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> RunResult:
        """The result a :meth:`to_dict` made; ValueError when ``data`` is not one."""
        if not isinstance(data.get("ok"), bool) or not isinstance(data.get("phase"), str):
            raise ValueError("not a run result: no boolean ok and phase")
        network = data.get("network")
        if network is not None:
            from iscsiboot.agent.plan import NetResult

            try:
                network = NetResult.from_dict(dict(_mapping(network, "network")))
            except TypeError as exc:  # a field missing
                raise ValueError(f"network: {exc}") from None
        return cls(
            ok=bool(data["ok"]),
            phase=str(data["phase"]),
            error=_text(data.get("error")),
            cause=_text(data.get("cause")),
            evidence=_text(data.get("evidence")),
            fix=_text(data.get("fix")),
            timeline={
                str(k): _number(v) for k, v in _mapping(data.get("timeline") or {}, "timeline").items()
            },
            system=_text(data.get("system")),
            storage=_text(data.get("storage")),
            network=network,
            sessions=[
                SessionInfo(str(item.get("session")), str(item.get("target")))
                for item in (_mapping(entry, "sessions") for entry in _list(data.get("sessions")))
            ],
            backend=_text(data.get("backend")),
            transport=_text(data.get("transport")),
            ibft=_text(data.get("ibft")),
            devices={str(k): str(v) for k, v in _mapping(data.get("devices") or {}, "devices").items()},
            mounts=[str(m) for m in _list(data.get("mounts"))],
            warnings=[str(w) for w in _list(data.get("warnings"))],
            total=_number(data.get("total") or 0.0),
            clock={
                str(k): None if v is None else _number(v)
                for k, v in _mapping(data.get("clock") or {}, "clock").items()
            },
        )

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        """The result of the JSON after :data:`RESULT_TAG`; ValueError when it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a run result: not a JSON object")
        return cls.from_dict(data)


def result_line(data: Mapping[str, object]) -> str:
    """The console line of a result's JSON (:meth:`RunResult.to_dict`): the tag and the JSON on one line."""
    return f"{RESULT_TAG} {json.dumps(data, separators=(',', ':'))}"


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{what}: not a JSON object")
    return value


def _list(value: object) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("not a JSON list")
    return value


class Reporter:
    """Writes masked lines to the console and to the kernel log.

    ``console_level``: the kernel's console log level (:func:`kernel_console_level`) when
    ``console`` is the kernel's console (PID 1), else None.  The kernel prints every
    kernel log record below that level on its console itself, with its timestamp, so such
    a line is written there only, and reaches the console once (written twice, the two
    copies interleave under a slow CPU).  A line the kernel would not show, or one too
    long for a kernel log record, goes to the console directly, and so does every line
    after it: the kernel prints its log on a serial console while the tty is still
    sending what was written to it, so a record after a long direct line (the result
    line, then "powering off") would land in the middle of that line.
    """

    def __init__(
        self,
        console: TextIO,
        *,
        kmsg: str | None = "/dev/kmsg",
        report_path: str | None = REPORT_PATH,
        verbose: bool = False,
        quiet: bool = False,
        console_level: int | None = None,
    ) -> None:
        self.console = console
        self.kmsg = kmsg
        self.report_path = report_path
        self.verbose = verbose
        self.quiet = quiet
        self.console_level = console_level
        self.secrets: list[Secret | str] = []
        self.direct = False  # a line went to the console directly: the later ones follow it there

    def add_secrets(self, secrets: Iterable[Secret | str]) -> None:
        self.secrets.extend(s for s in secrets if s)

    def mask(self, text: str) -> str:
        return mask(text, self.secrets)

    def masked(self, value: object) -> object:
        """``value`` with every string in it masked, field by field (before JSON escapes a secret)."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask(k): self.masked(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.masked(v) for v in value]
        return value

    def _kernel(self, text: str, level: int) -> bool:
        """``text`` in the kernel log, a record per line; False when it could not be written whole.

        The device is opened for each call: the kernel rate-limits what one open
        ``/dev/kmsg`` takes from user space (ten records in five seconds).
        """
        if self.kmsg is None:
            return False
        try:
            fd = os.open(self.kmsg, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY)
        except OSError:
            self.kmsg = None
            return False
        try:
            for line in text.splitlines() or [""]:
                os.write(fd, _record(line, level))
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def _console(self, text: str) -> None:
        self.direct = True
        try:
            self.console.write(text + "\n")
            self.console.flush()
        except (OSError, ValueError):
            pass

    def _shown_by_kernel(self, text: str, level: int) -> bool:
        """Whether the kernel prints ``text``'s records at ``level`` on the console, whole."""
        if self.direct or self.console_level is None or self.kmsg is None or level >= self.console_level:
            return False
        return all(len(_record(line, level)) < KMSG_RECORD for line in text.splitlines() or [""])

    def _off_console(self, level: int) -> int:
        """A level at which the kernel keeps a copy off its console (``level`` when none is)."""
        if self.console_level is not None and level < self.console_level <= 7:
            return self.console_level
        return level

    def _say(self, text: str, level: int, *, show: bool) -> None:
        """``text`` in the kernel log, and on the console once when ``show``."""
        if show and self._shown_by_kernel(text, level):
            if not self._kernel(text, level):
                self._console(f"iscsiboot: {text}")  # the kernel log did not take it
            return
        if show:
            self._console(f"iscsiboot: {text}")
            level = self._off_console(level)  # too long for a record: its cut copy stays off the console
        self._kernel(text, level)

    def line(self, text: str, *, level: int = 6) -> None:
        """A line for the console and the kernel log."""
        self._say(self.mask(text), level, show=not self.quiet)

    def debug(self, text: str) -> None:
        """Detail for the kernel log; on the console only with ``debugging``."""
        self._say(self.mask(text), 7, show=self.verbose and not self.quiet)

    def finish(self, result: RunResult) -> str:
        """Timeline or failure paragraph, report.json, and the ISCSIBOOT-RESULT line."""
        if result.ok:
            steps = ", ".join(f"{name} {secs:.2f} s" for name, secs in result.timeline.items())
            self.line(f"timeline: {steps} (total {result.total:.2f} s)")
        else:
            self.line(failure_paragraph(result), level=3)
        data = {k: self.masked(v) for k, v in result.to_dict().items()}  # the secrets never leave
        if self.report_path is not None:
            try:
                os.makedirs(os.path.dirname(self.report_path), exist_ok=True)
                from iscsiboot.output import write_atomic

                write_atomic(self.report_path, json.dumps(data, indent=2) + "\n")
            except OSError as exc:
                self.debug(f"cannot write {self.report_path}: {exc}")
        one_line = result_line(data)
        self._console(one_line)  # whole on the console (a kernel log record would cut it)
        self._drain()  # sent before the kernel (a module, a mount) prints anything into it
        self._kernel(one_line, self._off_console(6))  # the kernel's (cut) copy stays off the console
        return one_line

    def _drain(self, seconds: float = DRAIN_SECONDS) -> None:
        """Wait until a terminal console has sent what was written to it, for at most ``seconds``.

        The queue is polled (TIOCOUTQ) rather than waited for (tcdrain): a serial line held
        by flow control must not hold PID 1 for ever.
        """
        try:
            fd = self.console.fileno()
            if not os.isatty(fd):
                return
            import fcntl  # built into the interpreter; only the result line needs it
            import time

            deadline = time.monotonic() + seconds
            queued = bytearray(4)
            while time.monotonic() < deadline:
                fcntl.ioctl(fd, TIOCOUTQ, queued)
                if not int.from_bytes(queued, sys.byteorder):
                    return
                time.sleep(0.01)
        except (OSError, ValueError, AttributeError):
            pass


def failure_paragraph(result: RunResult) -> str:
    if result.cause == "break":
        return f"iSCSI boot stopped at the {result.phase} phase: {result.error}."
    return failure_text(result.phase, result.error, result.evidence, result.fix)


def shell_quote(value: str) -> str:
    """Single-quote ``value`` for a POSIX shell."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def result_file(values: dict[str, str | None]) -> str:
    """A shell-readable file of ``KEY='value'`` lines (None becomes an empty value)."""
    lines = []
    for key, value in values.items():
        if not key.replace("_", "").isalnum() or key[0].isdigit():
            raise ValueError(f"bad shell variable name {key!r}")
        lines.append(f"{key}={shell_quote(value or '')}")
    return "\n".join(lines) + "\n"
