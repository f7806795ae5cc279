"""End-to-end boots in QEMU (TCG) from a real tgtd on loopback: the ``vm`` tier.

The kernel, the initramfs and the SYSTEM image are built once per session
(cached between sessions); every scenario gets its own disk image, its own
tgtd (own portal and control port) and a hard time limit.  A failure message
carries the agent's result and the tail of the console log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts
from iscsiboot.qemu.scenario import Mode
from iscsiboot.secret import Secret
from vm_support import (
    BOOT_TIMEOUT,
    SAME_CAUSES,
    TIMINGS,
    WRONG_PASSWORD,
    boot,
    expect_failure,
    expect_success,
    explain,
    mutual,
    no_secret_in,
    one_way,
    require_vm,
)


@pytest.fixture(scope="session", autouse=True)
def _report_timings(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not TIMINGS:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("VM scenario boot times (QEMU start to result):")
        for name, seconds in TIMINGS:
            reporter.write_line(f"  {name:<28} {seconds:6.1f} s")


@pytest.fixture(scope="session")
def artifacts() -> Artifacts:
    require_vm()
    return prepare()


@pytest.fixture(scope="session")
def overlay_artifacts() -> Artifacts:
    require_vm()
    return prepare(overlay=True)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


def test_ipxe_sanboot_ibft_mutual_chap_demo(artifacts: Artifacts, tmp_path: Path) -> None:
    """1. The README's main job through the command line: ``iscsiboot qemu demo --json``."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "iscsiboot",
            "qemu",
            "demo",
            "--json",
            "--timeout",
            str(BOOT_TIMEOUT),
            "--log-dir",
            str(tmp_path),
            "--keep-log",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=BOOT_TIMEOUT + 600,
    )
    try:
        result = json.loads(done.stdout)
    except ValueError:
        pytest.fail(
            f"no JSON on stdout (exit {done.returncode})\nstdout: {done.stdout}\nstderr: {done.stderr}"
        )
    harness = result["harness"]
    log = Path(harness["console_log"]).read_text() if harness.get("console_log") else ""
    why = f"exit {done.returncode}\nresult: {json.dumps(result)[:3000]}\nstderr: {done.stderr}\n{log[-6000:]}"
    TIMINGS.append(("1 ibft mutual (demo)", float(harness["boot_seconds"])))
    assert done.returncode == 0, why
    assert result["ok"] is True and result["phase"] == "done", why
    assert harness["system_reached"] is True, why
    mounts = {m["mountpoint"]: m for m in harness["mounts"]}
    assert "/flash" in mounts and "/storage" in mounts, why
    assert mounts["/"]["fstype"] == "squashfs", why
    assert result["system"] and result["storage"], why
    assert "iscsiboot: disk image" in done.stderr, why  # progress while it works
    assert "boot=ISCSI=auto,LABEL=System" in log, why  # extlinux on the LUN booted the kernel
    no_secret_in(done.stdout + done.stderr + log, why)


def test_cmdline_explicit_options_one_way_chap(artifacts: Artifacts, log_dir: Path) -> None:
    """2. ``boot=ISCSI=iscsi_initiator=...`` on a direct kernel boot, no iBFT, one-way CHAP."""
    outcome = boot("2 cmdline one-way", one_way(mode=Mode.CMDLINE), artifacts, log_dir)
    expect_success(outcome, "cmdline")
    why = explain(outcome, "cmdline")
    assert "boot=ISCSI=iscsi_initiator=" in outcome.console, why
    assert "iscsi_password=***" in outcome.console, why
    no_secret_in(outcome.console + json.dumps(outcome.to_json()), why)


def test_wrong_password_fails_in_login(artifacts: Artifacts, log_dir: Path) -> None:
    """3. The client has the wrong password: ok false, phase login, authentication, nothing mounted."""
    options = one_way(mode=Mode.CMDLINE, client_password=Secret(WRONG_PASSWORD))
    outcome = boot("3 wrong password", options, artifacts, log_dir)
    expect_failure(outcome, "wrong password", "login")
    why = explain(outcome, "wrong password")
    assert outcome.result is not None
    error = str(outcome.result.error or "").lower()
    assert "authentication" in error, why  # the agent names the authentication failure
    assert (outcome.result.phase, outcome.result.cause) == SAME_CAUSES["wrong password"], why
    assert not outcome.result.mounts, why
    assert outcome.result.system is None and outcome.result.storage is None, why
    assert outcome.log_path is not None
    no_secret_in(outcome.console + json.dumps(outcome.to_json()) + outcome.log_path.read_text(), why)


def test_late_target_is_retried(artifacts: Artifacts, log_dir: Path) -> None:
    """4. The target appears 8 s after the guest's network is up; the agent retries and boots."""
    outcome = boot("4 target 8 s late", one_way(mode=Mode.CMDLINE, target_delay=8.0), artifacts, log_dir)
    expect_success(outcome, "late target")
    why = explain(outcome, "late target")
    assert any(step.startswith("target up") for step in outcome.progress), why
    assert outcome.result is not None
    login = outcome.result.timeline["login"]
    assert login >= 4.0, f"login took {login} s: the target was not late for the agent\n{why}"


def test_missing_storage_label(artifacts: Artifacts, log_dir: Path) -> None:
    """5. The LUN has no file system labelled Storage: the label lookup fails clearly."""
    options = one_way(mode=Mode.CMDLINE, disk_storage_label="Other")
    outcome = boot("5 storage label missing", options, artifacts, log_dir)
    expect_failure(outcome, "missing label", "label")
    why = explain(outcome, "missing label")
    assert outcome.result is not None
    assert "Storage" in str(outcome.result.error), why
    assert (outcome.result.phase, outcome.result.cause) == SAME_CAUSES["missing label"], why


def test_ibft_injected_through_acpi(artifacts: Artifacts, log_dir: Path) -> None:
    """6. No iPXE: the iBFT comes from ``-acpitable`` and the agent reads it from the ACPI tables."""
    outcome = boot("6 acpi iBFT mutual", mutual(acpi_ibft=True), artifacts, log_dir)
    expect_success(outcome, "acpi ibft")
    why = explain(outcome, "acpi ibft")
    assert "ACPI: iBFT" in outcome.console, why  # the kernel lists the injected table
    assert "iscsi_target" not in outcome.console, why  # nothing but the table names the target


def test_overlay_on_minimal_busybox_initramfs(overlay_artifacts: Artifacts, log_dir: Path) -> None:
    """7. The overlay appended to a minimal busybox initramfs boots the same way (sanboot, mutual CHAP)."""
    head = overlay_artifacts.initrd.read_bytes()[:6]
    assert head == b"070701"  # the minimal base comes first, uncompressed newc
    outcome = boot("7 overlay ibft mutual", mutual(), overlay_artifacts, log_dir)
    expect_success(outcome, "overlay")


def _processes_mentioning(needles: list[str]) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_ctrl_c_stops_everything_and_cleans_up(artifacts: Artifacts, tmp_path: Path) -> None:
    """Ctrl-C while QEMU runs: QEMU and tgtd end, the work folder goes, the console log stays."""
    work = tmp_path / "tmp"
    work.mkdir()
    logs = tmp_path / "logs"
    env = {**os.environ, "TMPDIR": str(work)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "iscsiboot", "qemu", "boot", "--mode", "cmdline", "--log-dir", str(logs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    port = None
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            match = re.search(r"on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = match.group(1)
            if "boot QEMU" in line:
                break
        assert port is not None, "".join(lines)
        needles = [str(work), f"portal=127.0.0.1:{port}"]
        deadline = time.monotonic() + 30
        while len(_processes_mentioning(needles)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # polling for QEMU to appear, with a deadline
        running = _processes_mentioning(needles)
        assert len(running) >= 2, running  # QEMU and tgtd
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # let it clean up what it started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    why = "".join(lines) + err
    assert proc.returncode == 130, why
    assert "interrupted" in err, why
    assert _processes_mentioning(needles) == [], why
    assert list(work.iterdir()) == [], why  # the work folder (disk image, scripts) is gone
    assert len(list(logs.glob("console-*.log"))) == 1, why  # the console log of the interrupted run stays
