"""The native login backend end to end in QEMU, side by side with iscsistart (marker ``vm``).

Two images of the same source: the default initramfs (native backend, no
iscsistart) and one built with ``iscsistart=True`` (``iscsiboot initramfs
build --backend iscsistart``).  Each scenario boots twice in the same run: with
the agent's default backend (native) on the default image and with
``iscsiboot.backend=iscsistart`` on the image with the tool.  The console
(``debugging``) shows which backend logged in.  The login phase times of both
backends and the two image sizes are printed at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from iscsiboot.initramfs.build import decompress
from iscsiboot.initramfs.cpio import read_newc
from iscsiboot.qemu.artifacts import minimal_initramfs, prepare
from iscsiboot.qemu.harness import Artifacts, default_log_dir
from iscsiboot.qemu.outcome import Outcome
from iscsiboot.qemu.scenario import Mode, ScenarioOptions
from iscsiboot.secret import Secret
from vm_support import (
    BOOT_TIMEOUT,
    PASSWORD,
    REVERSE_PASSWORD,
    REVERSE_USER,
    USER,
    WRONG_PASSWORD,
    boot,
    expect_failure,
    expect_success,
    explain,
    require_vm,
)

BACKENDS = ("iscsistart", "native")

LOGIN_TIMES: dict[str, dict[str, float]] = {}  # scenario -> backend -> login phase seconds
SIZES: dict[str, int] = {}
MEASURED = default_log_dir() / "native-backend-measurements.json"


@pytest.fixture(scope="session", autouse=True)
def _report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if LOGIN_TIMES or SIZES:  # also kept as a file: the terminal summary may be cut
        MEASURED.parent.mkdir(parents=True, exist_ok=True)
        MEASURED.write_text(json.dumps({"initramfs_bytes": SIZES, "login_seconds": LOGIN_TIMES}, indent=1))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not (LOGIN_TIMES or SIZES):
        return
    reporter.write_line("")
    if SIZES:
        reporter.write_line("initramfs size (xz):")
        for name, size in SIZES.items():
            reporter.write_line(f"  {name:<28} {size / 2**20:7.2f} MiB ({size} bytes)")
    reporter.write_line("login phase (agent timeline), same run:")
    for scenario, times in LOGIN_TIMES.items():
        cells = "  ".join(f"{b} {times[b]:5.2f} s" for b in BACKENDS if b in times)
        reporter.write_line(f"  {scenario:<28} {cells}")


@pytest.fixture(scope="module")
def images() -> dict[str, Artifacts]:
    """backend -> the artifacts it boots (the native one has no iscsistart)."""
    require_vm()
    native = prepare()  # the default image: `iscsiboot qemu boot` boots it
    with_tool = prepare(iscsistart=True)  # `iscsiboot qemu boot --backend iscsistart`
    SIZES["with iscsistart"] = with_tool.initrd.stat().st_size
    SIZES["without iscsistart"] = native.initrd.stat().st_size
    return {"iscsistart": with_tool, "native": native}


def members(image: Path) -> set[str]:
    return {m.entry.path for m in read_newc(decompress(image.read_bytes()))}


def test_image_without_iscsistart_is_smaller(images: dict[str, Artifacts]) -> None:
    with_tool, without = images["iscsistart"].initrd, images["native"].initrd
    assert "usr/lib/iscsiboot/libexec/iscsistart" in members(with_tool)
    names = members(without)
    assert "usr/lib/iscsiboot/libexec/iscsistart" not in names
    assert any(n.endswith("iscsiboot/iscsi/netlink.pyc") for n in names), sorted(names)[:50]
    assert without.stat().st_size < with_tool.stat().st_size


def options(backend: str, *, worker: bool = True, **kw: object) -> ScenarioOptions:
    extra = ["debugging"]
    if backend == "iscsistart":
        extra.append("iscsiboot.backend=iscsistart")  # the native image relies on the default
    if not worker:
        extra.append("iscsiboot.worker=no")
    return ScenarioOptions(
        username=USER,
        password=Secret(PASSWORD),
        timeout=BOOT_TIMEOUT,
        extra_append=tuple(extra),
        **kw,  # type: ignore[arg-type]
    )


def mutual(backend: str, *, worker: bool = True, **kw: object) -> ScenarioOptions:
    return options(
        backend, worker=worker, reverse_username=REVERSE_USER, reverse_password=Secret(REVERSE_PASSWORD), **kw
    )


def run(
    name: str, backend: str, scenario: ScenarioOptions, images: dict[str, Artifacts], log_dir: Path
) -> Outcome:
    outcome = boot(f"{name} [{backend}]", scenario, images[backend], log_dir)
    why = explain(outcome, name)
    if backend == "native":
        assert "iscsiboot: native: session" in outcome.console, why
        assert "iscsiboot: iscsistart:" not in outcome.console, why
    else:
        assert "iscsiboot: iscsistart" in outcome.console, why
        assert "iscsiboot: native:" not in outcome.console, why
    if outcome.result is not None and outcome.result.phase not in ("config", "modules", "network"):
        assert outcome.result.backend == backend, why
    for secret in (PASSWORD, REVERSE_PASSWORD, WRONG_PASSWORD):
        assert secret not in outcome.console + json.dumps(outcome.to_json()), f"a CHAP secret leaked\n{why}"
    if outcome.result is not None and "login" in (outcome.result.timeline):
        LOGIN_TIMES.setdefault(name, {})[backend] = float(outcome.result.timeline["login"])
    return outcome


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sanboot_ibft_mutual_chap(backend: str, images: dict[str, Artifacts], log_dir: Path) -> None:
    outcome = run("ibft sanboot mutual", backend, mutual(backend), images, log_dir)
    expect_success(outcome, "ibft sanboot mutual")
    if backend == "native":
        why = explain(outcome, "mutual")
        assert "CHAP (mutual)" in outcome.console, why
        # the kernel took the parameters a later iscsid reads to adopt the session
        shown = next(line for line in outcome.console.splitlines() if "native: sysfs session" in line)
        for field in ("targetname=iqn.", "tpgt=1", "initiatorname=iqn.", "username=htpc", "username_in=nas"):
            assert field in shown, why
        assert "persistent_address=10.0.2.2" in shown and "persistent_port=" in shown, why
        assert outcome.result is not None
        assert [s.target for s in outcome.result.sessions] == [options(backend).target_name], why
        # /init's preload loaded the NIC driver while Python started, PID 1's start-up child waited for it
        # and set the link up; the iBFT's network (the firmware's DHCP lease) needs no network worker:
        # PID 1 set it, and DHCP renewed it
        assert "start-up child: /init's NIC preload ended +" in outcome.console, why
        assert "NIC drivers loaded (virtio_pci, virtio_net)" in outcome.console, why
        assert outcome.result.network is not None and outcome.result.network.renewal == "renewed", why


@pytest.mark.parametrize("backend", BACKENDS)
def test_cmdline_one_way_chap(backend: str, images: dict[str, Artifacts], log_dir: Path) -> None:
    """With iscsistart, also without the network worker (iscsiboot.worker=no): the phase in PID 1."""
    worker = backend == "native"
    scenario = options(backend, worker=worker, mode=Mode.CMDLINE)
    outcome = run("cmdline one-way", backend, scenario, images, log_dir)
    expect_success(outcome, "cmdline one-way")
    assert ("network worker:" in outcome.console) is worker, explain(outcome, "cmdline one-way")


@pytest.mark.parametrize("backend", BACKENDS)
def test_acpi_ibft_mutual_chap(backend: str, images: dict[str, Artifacts], log_dir: Path) -> None:
    outcome = run("acpi iBFT mutual", backend, mutual(backend, acpi_ibft=True), images, log_dir)
    expect_success(outcome, "acpi iBFT mutual")


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_password(backend: str, images: dict[str, Artifacts], log_dir: Path) -> None:
    scenario = options(backend, mode=Mode.CMDLINE, client_password=Secret(WRONG_PASSWORD))
    outcome = run("wrong password", backend, scenario, images, log_dir)
    expect_failure(outcome, "wrong password", "login")
    why = explain(outcome, "wrong password")
    assert outcome.result is not None
    assert outcome.result.cause == "auth", why
    assert "auth" in str(outcome.result.error or "").lower(), why
    assert "Oops" not in outcome.console and "BUG:" not in outcome.console, why
    if backend == "native":
        assert "torn down" in outcome.console, why  # the failed attempt removed its kernel session
        # the kernel had dropped the connection (its own clean-up queued) before STOP_CONN
        assert "native: the kernel closed the connection" in outcome.console, why


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlay_image(backend: str, images: dict[str, Artifacts], log_dir: Path) -> None:
    """The overlay appended to a minimal busybox initramfs, built for each backend."""
    overlay = prepare(overlay=True, iscsistart=backend == "iscsistart")
    carried = "usr/lib/iscsiboot/libexec/iscsistart" in members_of_overlay(overlay.initrd)
    assert carried is (backend == "iscsistart")
    outcome = run("overlay ibft mutual", backend, mutual(backend), {backend: overlay}, log_dir)
    expect_success(outcome, "overlay")
    # the minimal base has no e2fsck, and the overlay brings none: the agent says so
    assert "is not checked: the initramfs has no e2fsck" in outcome.console, explain(outcome, "overlay")


def members_of_overlay(image: Path) -> set[str]:
    """The overlay's own members (the part after the uncompressed minimal base)."""
    data = image.read_bytes()
    base = minimal_initramfs()
    assert data.startswith(base)
    return {m.entry.path for m in read_newc(decompress(data[len(base) :]))}


@pytest.mark.parametrize("backend", BACKENDS)
def test_late_target_is_retried(backend: str, images: dict[str, Artifacts], log_dir: Path) -> None:
    scenario = options(backend, mode=Mode.CMDLINE, target_delay=8.0)
    outcome = run("target 8 s late", backend, scenario, images, log_dir)
    expect_success(outcome, "late target")
    assert outcome.result is not None
    assert outcome.result.timeline["login"] >= 4.0, explain(outcome, "late target")


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_storage_label(backend: str, images: dict[str, Artifacts], log_dir: Path) -> None:
    scenario = options(backend, mode=Mode.CMDLINE, disk_storage_label="Other")
    outcome = run("storage label missing", backend, scenario, images, log_dir)
    expect_failure(outcome, "missing label", "label")


def test_cli_backend_iscsistart(images: dict[str, Artifacts], tmp_path: Path) -> None:
    """``iscsiboot qemu boot --backend iscsistart`` boots the image with the tool and uses it."""
    done = subprocess.run(
        [
            sys.executable, "-m", "iscsiboot", "qemu", "boot", "--mode", "cmdline",
            "--username", USER, "--password", PASSWORD, "--backend", "iscsistart", "--json",
            "--timeout", str(BOOT_TIMEOUT), "--log-dir", str(tmp_path), "--keep-log",
        ],
        capture_output=True, text=True, check=False, timeout=BOOT_TIMEOUT + 600,
    )  # fmt: skip
    why = f"exit {done.returncode}\nstdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
    assert done.returncode == 0, why
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["harness"]["system_reached"] is True, why
    log = Path(result["harness"]["console_log"]).read_text()
    assert "iscsiboot.backend=iscsistart" in log, why
    assert result["backend"] == "iscsistart", why
    assert "usr/lib/iscsiboot/libexec/iscsistart" in members(images["iscsistart"].initrd)
    assert PASSWORD not in log + done.stdout + done.stderr
