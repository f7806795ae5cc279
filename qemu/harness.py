"""Run one boot scenario for real: disk image, tgtd, iPXE script, QEMU, clean-up.

:func:`run_scenario` takes a :class:`~iscsiboot.qemu.scenario.ScenarioOptions`
and the session's :class:`Artifacts` (kernel, initramfs, SYSTEM) and returns an
:class:`~iscsiboot.qemu.outcome.Outcome`.  Everything it starts (tgtd, QEMU)
(and, in dhcp mode, dnsmasq and the network namespace of :mod:`iscsiboot.qemu.netlab`)
is stopped and its work folder removed on every path: success, failure,
timeout and Ctrl-C.  The console log of a failed run is kept (masked) in
``log_dir``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TextIO

from iscsiboot.cmdline import usb
from iscsiboot.disk.install import install_image
from iscsiboot.errors import EnvironmentProblem, UsageError
from iscsiboot.ibft.build import build_table
from iscsiboot.ibft.mapping import model_to_table
from iscsiboot.model import DEFAULT_PORT
from iscsiboot.output import write_atomic
from iscsiboot.proc import which
from iscsiboot.qemu.netlab import SERVER_ADDRESS, LabNames, NetLab
from iscsiboot.qemu.outcome import RESULT_PREFIX, Outcome, finished, judge
from iscsiboot.qemu.runner import ConsoleFollower, Qemu, follow
from iscsiboot.qemu.scenario import (
    AGENT_PREFIX,
    BIOS_IMAGE,
    EFI_IMAGE,
    EFI_ROM,
    GUEST_MAC,
    IPXE_DIR,
    OVMF,
    WRAPPER_SCRIPT,
    Boot,
    BootVia,
    Firmware,
    Plan,
    ScenarioOptions,
    network_is_up,
    plan,
)
from iscsiboot.qemu.targets import TargetKind, TargetServer, TgtServer, disk_lun, make_server
from iscsiboot.qemu.tgt import Tgtd, free_tcp_port
from iscsiboot.secret import mask

Progress = Callable[[str], None]
DISK_MB = 96
QEMU_STARTED = "boot QEMU"  # the progress line said just before QEMU starts
KERNEL_LINE = re.compile(r"\[\s*\d+\.\d+\] Linux version ")  # the kernel's first console line


@dataclass(frozen=True)
class Machine:
    """What a :class:`Driver` may act on: the target (stop it, serve the disk again), QMP."""

    stop_target: Callable[[], None]
    start_target: Callable[[], None]  # the same port, target, disk and accounts
    listen_target: Callable[[], None]  # the server alone: listening, nothing served yet
    qmp: Path | None  # QEMU's QMP socket (ScenarioOptions.qmp)
    say: Progress


class Driver(Protocol):
    """Acts on a running scenario (faults): attached once QEMU runs, then fed lines and polls."""

    def attach(self, machine: Machine) -> None: ...

    def line(self, text: str) -> None: ...

    def tick(self) -> None: ...


@dataclass(frozen=True)
class Artifacts:
    """What every scenario boots: a kernel, its initramfs and the test SYSTEM."""

    kernel: Path
    initrd: Path
    system: Path
    version: str = ""


def default_log_dir() -> Path:
    return Path(tempfile.gettempdir()) / "iscsiboot-logs"


def _quiet(_: str) -> None:
    return None


def _never(_lines: Sequence[str]) -> bool:
    """Follow the console until QEMU exits (or the time limit)."""
    return False


def disk_size_mb(artifacts: Artifacts) -> int:
    """The LUN's size: :data:`DISK_MB`, or twice what System holds when SYSTEM is large."""
    held = sum(path.stat().st_size for path in (artifacts.kernel, artifacts.initrd, artifacts.system))
    return max(DISK_MB, 2 * (held // (1024 * 1024) + 16))


def build_disk(p: Plan, artifacts: Artifacts, *, size_mb: int | None = None) -> Path:
    """The LUN's image: System (KERNEL, initrd, SYSTEM, extlinux.conf) and Storage."""
    if size_mb is None:
        size_mb = disk_size_mb(artifacts)
    install_image(
        p.target.image,
        kernel=artifacts.kernel,
        initrd=artifacts.initrd,
        system=artifacts.system,
        append=p.append,
        system_label=p.options.system_label,
        storage_label=p.options.written_storage_label,
        size_mb=size_mb,
        serial=True,
        secrets=p.secrets(),
        layout=p.options.disk_layout,
    )
    return p.target.image


def write_table(p: Plan) -> Path:
    """The iBFT that ``-acpitable`` injects, built from the plan's model."""
    assert p.table_config is not None
    write_atomic(p.files.table, build_table(model_to_table(p.table_config, mac=GUEST_MAC)))
    return p.files.table


def _configure_target(server: TargetServer, p: Plan) -> None:
    server.start()
    server.serve(p.target, initiator=p.options.initiator)


def _keep_log(text: str, log_dir: Path, options: ScenarioOptions) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"console-{stamp}-{options.mode.value}-", suffix=".log", dir=log_dir)
    os.close(fd)
    write_atomic(name, text + "\n")
    return Path(name)


def check_host(options: ScenarioOptions) -> str:
    """The QEMU binary; raise EnvironmentProblem when the host cannot run scenarios."""
    qemu = which("qemu-system-x86_64", hint="install qemu-system-x86")
    if os.geteuid() != 0:
        raise EnvironmentProblem("boot scenarios need root (tgtd, loop devices)", fix="run as root")
    if options.boot is Boot.SANBOOT and not Path("/usr/lib/ipxe/qemu").is_dir():
        raise EnvironmentProblem("QEMU's iPXE ROMs are missing", fix="install ipxe-qemu")
    if options.firmware is Firmware.UEFI:
        for path, package in ((OVMF, "ovmf"), (EFI_ROM, "ipxe-qemu")):
            if not path.is_file():
                raise EnvironmentProblem(f"{path} is missing (UEFI)", fix=f"install {package}")
    if options.in_lab:
        NetLab.check_host()
    if options.boot_via is BootVia.USB:
        usb.check_host()
    if options.boot_via is BootVia.DNSMASQ:
        for image in (BIOS_IMAGE, EFI_IMAGE):
            if not (IPXE_DIR / image).is_file():
                raise EnvironmentProblem(f"{IPXE_DIR / image} is missing (the PXE chain)", fix="install ipxe")
    if options.kvm and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise EnvironmentProblem("--kvm needs /dev/kvm", fix="drop --kvm (TCG is the default)")
    return qemu


def run_scenario(
    options: ScenarioOptions,
    artifacts: Artifacts,
    *,
    progress: Progress = _quiet,
    console: TextIO | None = None,
    log_dir: Path | None = None,
    keep_log: bool | None = None,
    workdir_parent: Path | None = None,
    target: TargetServer | None = None,
    driver: Driver | None = None,
) -> Outcome:
    """Boot ``options`` once and say how it ended.

    ``driver`` acts on the running machine (:mod:`iscsiboot.qemu.soak`'s faults): it is
    attached to the target server and the QMP socket once QEMU runs, then sees every
    console line and every poll.

    ``target``: a running server of ``options.target`` that several scenarios
    share (the LIO VM of a test module); it serves this scenario's disk, which
    must then be ``options.disk``, and is left running.  Without it the
    scenario starts its own server and stops it at the end.

    ``progress`` gets one line per step; ``console`` (a stream) gets the
    guest's console lines as they appear, secrets masked.  The console log
    is kept in ``log_dir`` when the run fails (or always with ``keep_log``).
    """
    qemu_bin = check_host(options)
    t0 = time.monotonic()
    steps: list[str] = []

    def say(text: str) -> None:
        steps.append(text)
        progress(text)

    workdir = Path(tempfile.mkdtemp(prefix="iscsiboot-qemu-", dir=workdir_parent))
    qemu: Qemu | None = None
    server: TargetServer | None = target
    lab: NetLab | None = None
    follower: ConsoleFollower | None = None
    p: Plan | None = None
    outcome: Outcome | None = None
    try:
        names = LabNames.fresh() if options.in_lab else None
        if names is not None:
            port = DEFAULT_PORT  # the namespace is the lab's own: the standard port is free
            tgtd = Tgtd(workdir / "tgt", host=SERVER_ADDRESS, port=port, netns=names.namespace)
            server = TgtServer(workdir / "tgt", tgtd=tgtd)
        elif target is not None:
            if options.disk is None or target.kind is not options.target:
                raise UsageError("a shared target serves its own disk", fix="pass that disk as options.disk")
            port = target.port
        else:
            port = free_tcp_port()
        p = plan(
            options,
            port=port,
            workdir=workdir,
            kernel=artifacts.kernel,
            initrd=artifacts.initrd,
            qemu=qemu_bin,
            lab=names,
        )
        p.files.tftp.mkdir(parents=True, exist_ok=True)
        if options.boot_via is BootVia.DNSMASQ:
            for image in (BIOS_IMAGE, EFI_IMAGE):  # what dnsmasq's TFTP hands the PXE clients
                shutil.copyfile(IPXE_DIR / image, p.files.tftp / image)
        if options.empty_lun:
            say("an empty LUN (0 bytes)")
            p.target.image.write_bytes(b"")
        elif options.disk is None or not options.disk.exists():
            say(f"disk image ({options.system_label}, {options.written_storage_label})")
            build_disk(p, artifacts)
        else:
            say(f"disk image {options.disk} (kept from an earlier boot)")
        if server is None:
            if options.target is TargetKind.LIO:
                say("LIO target VM (busybox, configfs) with the disk")
            server = make_server(options.target, workdir / "target", port=port, image=p.target.image)
        if p.lab is not None and p.dnsmasq_config is not None:
            lab = NetLab(workdir / "lab", p.lab)
            served = "no root path" if options.no_root_path else "the root path in option 17"
            if options.boot_via is BootVia.DNSMASQ:
                served += f", TFTP: {BIOS_IMAGE}, {EFI_IMAGE}, the script"
            say(f"network namespace {p.lab.namespace}: bridge {SERVER_ADDRESS}, dnsmasq ({served})")
            lab.start()
            lab.start_dnsmasq(p.dnsmasq_config)
        target_up = False
        anchor: float | None = None  # when the guest's network came up (the delay counts from there)
        if options.target_delay <= 0:
            say(f"target {p.target.iqn} on {p.portal_text} ({options.target.value})")
            _configure_target(server, p)
            target_up = True
            if p.lab is None:
                p = _with_disk_lun(p, artifacts, say)
        else:
            say(
                f"target {p.target.iqn} on {p.portal_text} {options.target_delay:g} s"
                " after the guest's network is up"
            )

        def tick(elapsed: float) -> None:
            nonlocal target_up
            if target_up or anchor is None:
                return
            late = time.monotonic() - anchor
            if late >= options.target_delay:
                target_up = True
                say(f"target up {late:.1f} s after the guest's network ({elapsed:.1f} s after QEMU start)")
                assert p is not None and server is not None
                _configure_target(server, p)

        if p.ipxe_script is not None and options.boot_via is BootVia.USB:
            say(f"boot stick {p.files.stick} (generate usb: syslinux, ipxe.lkrn, the embedded script)")
            usb.write_stick(p.files.stick, usb.stick_files(p.ipxe_script, usb.StickFirmware.BIOS))
        elif p.ipxe_script is not None:
            # dnsmasq running as root serves only world-readable files over TFTP; the work
            # folder (mkdtemp: 0700) keeps the script's CHAP secrets from other users
            mode = 0o644 if options.boot_via is BootVia.DNSMASQ else 0o600
            write_atomic(p.files.scenario_script, p.ipxe_script, mode=mode)
            write_atomic(p.files.script, WRAPPER_SCRIPT)
        if options.acpi_ibft:
            say("iBFT for -acpitable")
            write_table(p)
        hidden = p.secrets()

        def line(text: str) -> None:
            nonlocal anchor
            shown = mask(text, hidden)
            if console is not None:
                console.write(shown + "\n")
                console.flush()
            elif shown.startswith(AGENT_PREFIX) and RESULT_PREFIX not in shown:
                say("guest: " + shown[len(AGENT_PREFIX) :])
            if anchor is None and network_is_up(text):
                anchor = time.monotonic()
            if driver is not None:
                driver.line(text)

        def poll(elapsed: float) -> None:
            tick(elapsed)
            if driver is not None:
                driver.tick()

        accel = "KVM" if options.kvm else "TCG"
        say(f"{QEMU_STARTED} ({accel}, {p.boot.value})")
        qemu = Qemu(p.qemu_argv, p.files.qemu_log)
        follower = ConsoleFollower(p.files.console)
        qemu.start()
        if driver is not None:
            running, now = server, p
            assert running is not None
            driver.attach(
                Machine(
                    running.stop,
                    lambda: _configure_target(running, now),
                    running.start,
                    now.files.qmp if options.qmp else None,
                    say,
                )
            )
        until = _never if options.until_exit else finished
        waited = follow(qemu, follower, timeout=options.timeout, until=until, on_line=line, on_tick=poll)
        status = qemu.stop()
        follower.flush()
        if waited.reason == "timeout":
            say(f"time limit of {options.timeout:g} s reached; QEMU killed")
        qemu_err = mask(qemu.stderr_text(), hidden).strip()
        text = mask(follower.text(), hidden)
        if qemu_err and status not in (0, None) and waited.reason == "exited":
            text += "\n--- qemu ---\n" + qemu_err
        if lab is not None:
            text += "\n--- dnsmasq ---\n" + mask(lab.dhcp_log(), hidden).strip()
        if server is not None and options.target is not TargetKind.TGT:
            text += f"\n--- {options.target.value} ---\n" + mask(server.log_text(), hidden).strip()
        outcome = judge(
            follower.lines,
            reason=waited.reason,
            boot_seconds=waited.elapsed,
            total_seconds=time.monotonic() - t0,
            console=text,
            qemu_status=status,
            progress=steps,
            sanboot=p.boot is Boot.SANBOOT,
        )
    except BaseException:
        if follower is not None and p is not None:
            follower.flush()
            with contextlib.suppress(OSError):
                _keep_log(p.masked(follower.text()), log_dir or default_log_dir(), options)
        raise
    finally:
        if qemu is not None:
            qemu.stop()
        if server is not None and target is None:
            server.stop()
        if lab is not None:
            lab.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    keep = keep_log if keep_log is not None else not outcome.ok
    if keep:
        kept = _keep_log(outcome.console, log_dir or default_log_dir(), options)
        outcome = _with_log(outcome, kept)
    return outcome


def _with_disk_lun(p: Plan, artifacts: Artifacts, say: Progress) -> Plan:
    """``p`` with the disk's LUN as the running target reports it (REPORT LUNS and INQUIRY)."""
    lun = disk_lun(p.target, port=p.port, initiator=p.options.initiator)
    say(f"the target serves the disk at LUN {lun} (REPORT LUNS, INQUIRY)")
    if lun == p.target.lun:
        return p
    return plan(
        p.options,
        port=p.port,
        workdir=p.files.workdir,
        kernel=artifacts.kernel,
        initrd=artifacts.initrd,
        qemu=p.qemu_argv[0],
        lab=p.lab,
        lun=lun,
    )


def _with_log(outcome: Outcome, path: Path) -> Outcome:
    return replace(outcome, log_path=path, total_seconds=outcome.total_seconds)


def describe(options: ScenarioOptions, artifacts: Artifacts, *, port: int = 65535) -> str:
    """The plan of ``options`` in words (secrets masked; the real port is picked at run time)."""
    p = plan(
        options,
        port=port,
        workdir=Path(tempfile.gettempdir()) / "iscsiboot-qemu-XXXX",
        kernel=artifacts.kernel,
        initrd=artifacts.initrd,
        lab=LabNames("iscsiboot-NS") if options.in_lab else None,
    )
    return p.describe().replace(str(port), "PORT") + "\n(PORT: a free port picked at run time)"


def stderr_progress(text: str) -> None:
    sys.stderr.write(f"iscsiboot: {text}\n")
    sys.stderr.flush()


@dataclass
class HostClock:
    """Host arrival times of the console lines and of QEMU's start: a ``console`` and
    ``progress`` for :func:`run_scenario` that lets a benchmark time the firmware."""

    started: float | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)

    def progress(self, text: str) -> None:
        if text.startswith(QEMU_STARTED):
            self.started = time.monotonic()

    def write(self, text: str) -> int:
        now = time.monotonic()
        self.lines.extend((now, line) for line in text.splitlines())
        return len(text)

    def flush(self) -> None:
        return None

    def first(self, wanted: re.Pattern[str], ndigits: int = 3) -> float | None:
        """Seconds from QEMU's start to the first line that matches ``wanted``, rounded."""
        if self.started is None:
            return None
        for at, line in self.lines:
            if wanted.search(line):
                return round(at - self.started, ndigits)
        return None
