"""Shared helpers of the VM tier: prerequisites, boots with a readable failure, timings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from iscsiboot.qemu.harness import Artifacts, run_scenario
from iscsiboot.qemu.outcome import Outcome
from iscsiboot.qemu.scenario import ScenarioOptions
from iscsiboot.secret import Secret

BOOT_TIMEOUT = 150.0  # seconds per boot; QEMU is killed after it
CONSOLE_TAIL = 80  # console lines attached to a failure message
TIMINGS: list[tuple[str, float]] = []  # (scenario, boot seconds), printed at the end of the session
# The scenarios' CHAP accounts (the client's, the target's for mutual CHAP) and a wrong secret.
USER, PASSWORD = "htpc", "htpc-secret-12"
REVERSE_USER, REVERSE_PASSWORD = "nas", "nas-secret-345"
WRONG_PASSWORD = "not-the-one-67"
SECRETS = (PASSWORD, REVERSE_PASSWORD, WRONG_PASSWORD)
# Faults that end in the same phase and named cause on every transport: fault -> (phase, cause).
SAME_CAUSES: dict[str, tuple[str, str]] = {
    "wrong password": ("login", "auth"),
    "missing label": ("label", "not-found"),
}


def missing_prerequisite() -> str | None:
    """Why the VM tier cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (tgtd, loop devices, mounts)"
    for program, package in (
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("tgtd", "tgt"),
        ("tgtadm", "tgt"),
        ("mksquashfs", "squashfs-tools"),
        ("sfdisk", "fdisk"),
        ("mkfs.ext4", "e2fsprogs"),
        ("extlinux", "extlinux"),
        ("apt-get", "apt"),
    ):
        if shutil.which(program) is None and shutil.which(program, path="/usr/sbin:/sbin") is None:
            return f"{program} is missing (install {package})"
    if not Path("/usr/lib/ipxe/qemu").is_dir():
        return "QEMU's iPXE ROMs are missing (install ipxe-qemu)"
    if not Path("/bin/busybox").is_file():
        return "busybox is missing (install busybox-static)"
    return None


def require_vm() -> None:
    why = missing_prerequisite()
    if why is not None:
        pytest.skip(why)


def explain(outcome: Outcome, name: str) -> str:
    """A failure message: the verdict, the agent's result and the console's tail."""
    lines = outcome.console.splitlines()
    tail = "\n".join(lines[-CONSOLE_TAIL:])
    return (
        f"scenario {name}: ok={outcome.ok} reason={outcome.reason} phase={outcome.phase} "
        f"error={outcome.error!r} boot={outcome.boot_seconds:.1f}s\n"
        f"steps: {'; '.join(outcome.progress)}\n"
        f"result: {outcome.result}\n"
        f"console log: {outcome.log_path}\n"
        f"--- console (last {CONSOLE_TAIL} of {len(lines)} lines) ---\n{tail}"
    )


def boot(name: str, options: ScenarioOptions, artifacts: Artifacts, log_dir: Path) -> Outcome:
    """Run one scenario and record its boot time."""
    outcome = run_scenario(options, artifacts, log_dir=log_dir)
    TIMINGS.append((name, outcome.boot_seconds))
    return outcome


def expect_success(outcome: Outcome, name: str) -> None:
    why = explain(outcome, name)
    assert outcome.ok, why
    assert outcome.result is not None and outcome.result.ok is True, why
    assert outcome.result.phase == "done", why
    assert outcome.system.reached, why
    flash = outcome.system.mounted_at("/flash")
    storage = outcome.system.mounted_at("/storage")
    assert flash is not None and storage is not None, why
    assert outcome.system.mounted_at("/") is not None, why
    assert outcome.system.mounted_at("/").fstype == "squashfs", why  # type: ignore[union-attr]
    assert outcome.result.system and outcome.result.storage, why


def expect_failure(outcome: Outcome, name: str, phase: str) -> None:
    why = explain(outcome, name)
    assert not outcome.ok, why
    assert outcome.reason == "agent", why
    assert outcome.result is not None and outcome.result.ok is False, why
    assert outcome.result.phase == phase, why
    assert not outcome.system.reached, why
    assert outcome.log_path is not None and outcome.log_path.is_file(), why


def one_way(**kw: object) -> ScenarioOptions:
    """The scenario with one-way CHAP (``kw``: any other scenario option)."""
    return ScenarioOptions(username=USER, password=Secret(PASSWORD), timeout=BOOT_TIMEOUT, **kw)  # type: ignore[arg-type]


def mutual(**kw: object) -> ScenarioOptions:
    """The scenario with mutual CHAP."""
    return one_way(reverse_username=REVERSE_USER, reverse_password=Secret(REVERSE_PASSWORD), **kw)


def no_secret_in(text: str, why: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a CHAP secret leaked\n{why}"
