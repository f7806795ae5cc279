"""What a boot scenario ended with, read from the guest's console (pure).

The agent prints ``ISCSIBOOT-RESULT <one-line JSON>`` as its last console
line; the tag and the schema are the agent's (:data:`~iscsiboot.agent.report.RESULT_TAG`,
:class:`~iscsiboot.agent.report.RunResult`), and the JSON is read back through them.
The test SYSTEM then prints its own marker (see :mod:`iscsiboot.qemu.system`).  A boot succeeded only when the
agent said ``ok`` and the SYSTEM root was reached.

Before the kernel there is only the firmware.  Under UEFI, OVMF copies its
console (iPXE's messages among it) to the serial port, so a failed
``sanboot`` is read from iPXE's own error line (:func:`sanboot_failure`);
under SeaBIOS iPXE writes to the screen only and the console stays silent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iscsiboot.agent.report import RESULT_TAG, RunResult
from iscsiboot.qemu.system import MOUNTS_END, SystemReport, parse_report

RESULT_PREFIX = f"{RESULT_TAG} "  # the agent's console contract (iscsiboot.agent.report)
SANBOOT_FAILED = "iscsiboot: sanboot failed"  # what the wrapper script echoes (qemu/wrapper.ipxe)
# iPXE's error lines end in its error page: (http://ipxe.org/XXXXXXXX)
_IPXE_ERROR = re.compile(
    r"^(?P<what>Could not [^:]+): (?P<text>.*?) \(http://ipxe\.org/(?P<code>[0-9a-f]{8})\)"
)
IPXE_EPERM = 0x41  # iPXE's POSIX code byte (bits 31-24) of "Operation not permitted"
# iPXE's iSCSI login failures under EPERM, by their disambiguator (bits 12-8; iPXE's iscsi.c)
IPXE_ISCSI_EPERM = {
    1: ("auth", "the target refused the login: initiator authentication failed (the CHAP user or secret)"),
    2: ("acl", "the target refused the login: this initiator is not authorised (the target's ACL)"),
}


_KERNEL_STAMP = re.compile(r"\[\s*\d+\.\d+\] ")


def _candidates(lines: Sequence[str]) -> Iterator[str]:
    """JSON texts that may follow ``ISCSIBOOT-RESULT``, the last line first.

    The agent writes its line to the console and a copy to the kernel log;
    the kernel may print that copy in the middle of the console line, so a
    line can hold a cut first copy and a whole second one, and the cut
    copy's rest then starts the next line.  Every occurrence is tried, and
    a cut one is also tried glued to the next line.
    """
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        starts = [m.end() for m in re.finditer(re.escape(RESULT_PREFIX), line)]
        for at in reversed(starts):
            text = line[at:]
            yield text
            stamp = _KERNEL_STAMP.search(text)
            if stamp is not None and i + 1 < len(lines):
                yield text[: stamp.start()] + lines[i + 1]


def find_result(lines: Sequence[str]) -> RunResult | None:
    """The last well-formed ``ISCSIBOOT-RESULT`` in ``lines``, if any."""
    for text in _candidates(lines):
        try:
            return RunResult.from_json(text)
        except ValueError:
            continue
    return None


def finished(lines: Sequence[str]) -> bool:
    """True once nothing more is to be learnt from the console.

    That is: the agent reported a failure, or the test SYSTEM printed its
    whole report (its mount table ends with :data:`MOUNTS_END`).
    """
    if any(MOUNTS_END in line for line in lines):
        return True
    result = find_result(lines)
    return result is not None and not result.ok


@dataclass(frozen=True)
class SanbootFailure:
    """How iPXE's ``sanboot`` failed, from its own error line."""

    cause: str  # "auth", "acl" or "sanboot"
    error: str
    ipxe: str  # iPXE's line, as printed


def sanboot_failure(lines: Sequence[str]) -> SanbootFailure | None:
    """The failure of iPXE's ``sanboot`` when the console shows one (UEFI: OVMF's console is serial)."""
    if not any(SANBOOT_FAILED in line for line in lines):
        return None
    found: re.Match[str] | None = None
    for line in lines:
        clean = re.sub(r"\x1b\[[0-9;=]*[A-Za-z]", "", line).strip()
        match = _IPXE_ERROR.match(clean)
        if match is not None and match["what"] != "Could not boot":
            found = match
    if found is None:
        return SanbootFailure("sanboot", "iPXE's sanboot failed without an error line", SANBOOT_FAILED)
    code = int(found["code"], 16)
    shown = found.group(0)
    if code >> 24 == IPXE_EPERM and (code >> 8) & 0x1F in IPXE_ISCSI_EPERM:
        cause, error = IPXE_ISCSI_EPERM[(code >> 8) & 0x1F]
        return SanbootFailure(cause, f"iPXE's sanboot: {error}", shown)
    return SanbootFailure("sanboot", f"iPXE's sanboot failed: {found['what']}: {found['text']}", shown)


@dataclass(frozen=True)
class Outcome:
    """One scenario's result."""

    ok: bool
    reason: str  # "system" (reached the SYSTEM), "agent" (agent failed), "exited", "timeout", "interrupted"
    result: RunResult | None  # the agent's ISCSIBOOT-RESULT
    system: SystemReport
    boot_seconds: float  # QEMU start to the end of the wait
    total_seconds: float  # everything: disk, target, boot, clean-up
    console: str  # the masked console log
    log_path: Path | None = None  # kept console log (failures)
    qemu_status: int | None = None
    progress: tuple[str, ...] = field(default=())
    sanboot: bool = True  # iPXE sanboot (else a direct kernel boot)

    @property
    def sanboot_failure(self) -> SanbootFailure | None:
        return sanboot_failure(self.console.splitlines()) if self.sanboot and self.result is None else None

    @property
    def phase(self) -> str:
        if self.result is not None:
            return self.result.phase
        if self.sanboot_failure is not None:
            return "sanboot"
        return "firmware" if not self.console.strip() else "kernel"

    @property
    def cause(self) -> str | None:
        """The named cause: the agent's, or that of iPXE's failed sanboot."""
        if self.result is not None:
            return self.result.cause
        failure = self.sanboot_failure
        return failure.cause if failure is not None else None

    @property
    def error(self) -> str | None:
        if self.result is not None and self.result.error:
            return self.result.error
        if self.ok:
            return None
        failure = self.sanboot_failure
        if failure is not None:
            return f"{failure.error} ({failure.ipxe})"
        silent = not self.console.strip()
        if silent and self.sanboot:
            limit = " before the time limit" if self.reason == "timeout" else ""
            return (
                f"nothing on the serial console{limit}: iPXE's sanboot did not start the kernel "
                "(it retries for ever; check the CHAP credentials, the target name and the portal)"
            )
        if silent:
            return "nothing on the serial console: QEMU did not start the kernel"
        if self.reason == "timeout":
            return "no result before the time limit"
        if self.result is None:
            return "the agent printed no ISCSIBOOT-RESULT line"
        if self.result.ok and not self.system.reached:
            return "the agent finished but the SYSTEM root did not report"
        return None

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``qemu boot --json``: the agent's object plus the harness' view."""
        obj: dict[str, Any] = (
            self.result.to_dict()
            if self.result is not None
            else {
                "ok": False,
                "phase": self.phase,
                "error": self.error,
                "cause": self.cause,
                "timeline": {},
                "system": None,
                "storage": None,
            }
        )
        obj["harness"] = {
            "ok": self.ok,
            "reason": self.reason,
            "system_reached": self.system.reached,
            "mounts": [
                {"device": m.device, "mountpoint": m.mountpoint, "fstype": m.fstype}
                for m in self.system.mounts
            ],
            "boot_seconds": round(self.boot_seconds, 2),
            "total_seconds": round(self.total_seconds, 2),
            "console_log": str(self.log_path) if self.log_path else None,
            "qemu_status": self.qemu_status,
        }
        if not self.ok and obj.get("ok"):
            obj["ok"] = False
            obj.setdefault("error", self.error)
        return obj


def judge(
    lines: Sequence[str],
    *,
    reason: str,
    boot_seconds: float,
    total_seconds: float,
    console: str,
    log_path: Path | None = None,
    qemu_status: int | None = None,
    progress: Sequence[str] = (),
    sanboot: bool = True,
) -> Outcome:
    result = find_result(lines)
    report = parse_report("\n".join(lines))
    ok = result is not None and result.ok and report.reached
    if ok:
        why = "system"
    elif result is not None and not result.ok:
        why = "agent"
    else:
        why = reason if reason != "matched" else "exited"
    return Outcome(
        ok=ok,
        reason=why,
        result=result,
        system=report,
        boot_seconds=boot_seconds,
        total_seconds=total_seconds,
        console=console,
        log_path=log_path,
        qemu_status=qemu_status,
        progress=tuple(progress),
        sanboot=sanboot,
    )


def timeline_text(result: RunResult | None) -> list[str]:
    """The agent's phase timeline as aligned lines."""
    if result is None:
        return []
    out = [f"  {name:<10} {secs:7.2f} s" for name, secs in result.timeline.items()]
    out.append(f"  {'total':<10} {result.total:7.2f} s")
    return out
