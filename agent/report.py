# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""What the user sees: console lines, /dev/kmsg, the timeline, the JSON report.

Every line passes through :func:`iscsiboot.secret.mask` with the secrets of the
boot model, so no CHAP password reaches the console, the kernel log or a file.
The last console line of a run is ``ISCSIBOOT-RESULT <one-line JSON>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from iscsiboot.secret import Secret, mask

RESULT_TAG = "ISCSIBOOT-RESULT"
REPORT_PATH = "/run/iscsiboot/report.json"


@dataclass
class RunResult:
    """The outcome of one run; ``phase`` is the failing phase or ``done``."""

    ok: bool = False
    phase: str = "config"
    error: str | None = None
    cause: str | None = None
    evidence: str | None = None
    fix: str | None = None
    timeline: dict[str, float] = field(default_factory=dict)
    system: str | None = None
    storage: str | None = None
    network: dict[str, Any] | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    backend: str | None = None  # the login backend that ran: native or iscsistart
    devices: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    total: float = 0.0
    clock: dict[str, float | None] = field(default_factory=dict)  # PID 1 only: see init.clock_marks

    def to_dict(self) -> dict[str, Any]:
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
            "network": self.network,
            "sessions": self.sessions,
            "backend": self.backend,
            "devices": self.devices,
            "mounts": self.mounts,
            "warnings": self.warnings,
            **({"clock": self.clock} if self.clock else {}),
        }


class Reporter:
    """Writes masked lines to the console and to the kernel log."""

    def __init__(
        self,
        console: TextIO,
        *,
        kmsg: str | None = "/dev/kmsg",
        report_path: str | None = REPORT_PATH,
        verbose: bool = False,
        quiet: bool = False,
    ) -> None:
        self.console = console
        self.kmsg = kmsg
        self.report_path = report_path
        self.verbose = verbose
        self.quiet = quiet
        self.secrets: list[Secret | str] = []

    def add_secrets(self, secrets: Iterable[Secret | str]) -> None:
        self.secrets.extend(s for s in secrets if s)

    def mask(self, text: str) -> str:
        return mask(text, self.secrets)

    def _kernel(self, text: str, level: int) -> None:
        if self.kmsg is None:
            return
        try:
            fd = os.open(self.kmsg, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY)
        except OSError:
            self.kmsg = None
            return
        try:
            for line in text.splitlines() or [""]:
                os.write(fd, f"<{level}>iscsiboot: {line}\n".encode(errors="replace")[:1000])
        except OSError:
            pass
        finally:
            os.close(fd)

    def _console(self, text: str) -> None:
        try:
            self.console.write(text + "\n")
            self.console.flush()
        except (OSError, ValueError):
            pass

    def line(self, text: str, *, level: int = 6) -> None:
        """A line for the console and the kernel log."""
        text = self.mask(text)
        if not self.quiet:
            self._console(f"iscsiboot: {text}")
        self._kernel(text, level)

    def debug(self, text: str) -> None:
        """Detail for the kernel log; on the console only with ``debugging``."""
        text = self.mask(text)
        if self.verbose and not self.quiet:
            self._console(f"iscsiboot: {text}")
        self._kernel(text, 7)

    def finish(self, result: RunResult) -> str:
        """Timeline or failure paragraph, report.json, and the ISCSIBOOT-RESULT line."""
        if result.ok:
            steps = ", ".join(f"{name} {secs:.2f} s" for name, secs in result.timeline.items())
            self.line(f"timeline: {steps} (total {result.total:.2f} s)")
        else:
            self.line(failure_paragraph(result), level=3)
        data = json.loads(self.mask(json.dumps(result.to_dict())))
        if self.report_path is not None:
            try:
                os.makedirs(os.path.dirname(self.report_path), exist_ok=True)
                from iscsiboot.output import write_atomic

                write_atomic(self.report_path, json.dumps(data, indent=2) + "\n")
            except OSError as exc:
                self.debug(f"cannot write {self.report_path}: {exc}")
        one_line = f"{RESULT_TAG} {json.dumps(data, separators=(',', ':'))}"
        self._console(one_line)
        self._kernel(one_line, 6)
        return one_line


def failure_paragraph(result: RunResult) -> str:
    if result.cause == "break":
        return f"iSCSI boot stopped at the {result.phase} phase: {result.error}."
    text = f"iSCSI boot failed in the {result.phase} phase: {result.error}."
    if result.evidence:
        text += f" Seen: {result.evidence}."
    if result.fix:
        text += f" Fix: {result.fix}."
    return text


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
