"""``/init``'s NIC preload: the script the image runs before the interpreter, and the agent's side of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.kmod import module_name
from iscsiboot.agent.phases.modules import PRELOAD_ENV, Loader
from iscsiboot.agent.startup import early as early_module
from iscsiboot.agent.startup.early import nics_and_links, preload_pid, wait_exit
from iscsiboot.initramfs import plan

PCI_NIC = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
PCI_DISK = "pci:v00008086d0000100Esv0sd0bc01sc00i00"
VIRTIO_NIC = "virtio:d00000001v00001AF4"
SHELL = shutil.which("sh") or "/bin/sh"
DEP = """kernel/drivers/virtio/virtio_pci.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko
kernel/drivers/net/net_failover.ko:
"""
ALIAS = """alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
"""


class FakeKernel:
    """finit_module stand-in: records the modules and marks /sys/module/<name>."""

    def __init__(self, sysfs: Path) -> None:
        self.sysfs = sysfs
        self.loaded: list[str] = []

    def __call__(self, path: str, params: str = "") -> None:
        self.loaded.append(module_name(path))
        (self.sysfs / "module" / module_name(path)).mkdir()


def _devices(sysfs: Path) -> None:
    for name, klass, alias in (("0000:00:03.0", "0x020000", PCI_NIC), ("0000:00:04.0", "0x010000", PCI_DISK)):
        dev = sysfs / "bus/pci/devices" / name
        dev.mkdir(parents=True)
        (dev / "class").write_text(f"{klass}\n")
        (dev / "modalias").write_text(f"{alias}\n")
    (sysfs / "bus/virtio/devices").mkdir(parents=True)
    # a virtio device that is not a NIC (a block device: id 2)
    blk = sysfs / "bus/virtio/devices/virtio9"
    blk.mkdir()
    (blk / "modalias").write_text("virtio:d00000002v00001AF4\n")


def _module_tree(tmp: Path, *, loaded: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """The module index, a sysfs with the devices of :func:`_devices` and ``loaded``, a modular /proc."""
    moddir, sysfs, proc = tmp / "lib/modules/6.1", tmp / "sys", tmp / "proc"
    moddir.mkdir(parents=True)
    (moddir / "modules.dep").write_text(DEP)
    (moddir / "modules.alias").write_text(ALIAS)
    (sysfs / "module").mkdir(parents=True)
    for name in loaded:
        (sysfs / "module" / name).mkdir()
    proc.mkdir()
    (proc / "modules").write_text("")
    _devices(sysfs)
    return moddir, sysfs, proc


def _run_preload(tmp_path: Path, sysfs: Path) -> list[list[str]]:
    """Run the image's nic-preload with a modprobe that logs its arguments (and, as virtio_pci
    would, reveals the virtio NIC when it is asked for the PCI one)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "modprobe.log"
    bin_dir.mkdir()
    modprobe = bin_dir / "modprobe"
    modprobe.write_text(
        f"#!{SHELL}\n"
        f'echo "$*" >> {log}\n'
        f'case "$*" in *{PCI_NIC}*) mkdir -p {sysfs}/bus/virtio/devices/virtio0 &&'
        f" echo {VIRTIO_NIC} > {sysfs}/bus/virtio/devices/virtio0/modalias;; esac\n"
    )
    modprobe.chmod(0o755)
    script = tmp_path / "nic-preload"
    script.write_bytes(plan.nic_preload_script(SHELL))
    script.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run([str(script), str(sysfs)], env=env, check=True, timeout=30)
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def test_preload_asks_modprobe_for_the_nics_then_for_what_the_bus_driver_revealed(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    _devices(sysfs)
    calls = _run_preload(tmp_path, sysfs)
    assert calls == [["-qab", PCI_NIC], ["-qab", PCI_NIC, VIRTIO_NIC]]  # never the disk, never virtio-blk


def test_preload_without_a_network_device_runs_no_modprobe(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    (sysfs / "bus/pci/devices").mkdir(parents=True)
    assert _run_preload(tmp_path, sysfs) == []


def test_init_starts_the_preload_only_as_pid_1_and_hands_its_pid_over() -> None:
    text = plan.init_script().decode()
    lines = text.splitlines()
    assert lines[0] == "#!/usr/lib/iscsiboot/bin/busybox sh"
    assert '[ "$$" = 1 ]' in text and f"{plan.NIC_PRELOAD} /sys" in text
    assert f"export {PRELOAD_ENV}=$!" in text
    assert lines[-1].startswith("exec ")  # the interpreter stays PID 1
    assert plan.init_script(plan.shell_of(False)).startswith(b"#!/bin/sh\n")


def test_preload_pid_leaves_the_environment() -> None:
    env = {PRELOAD_ENV: "42", "PATH": "/bin"}
    assert preload_pid(env) == 42 and env == {"PATH": "/bin"}
    assert preload_pid({PRELOAD_ENV: "1"}) is None  # never PID 1 itself
    assert preload_pid({PRELOAD_ENV: "x"}) is None
    assert preload_pid({}) is None


def test_wait_exit_returns_when_the_process_ends_and_not_before() -> None:
    if not hasattr(os, "pidfd_open"):
        pytest.skip("os.pidfd_open needs Linux 5.3 and Python 3.9")
    gate_r, gate_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", "import os; os.read(0, 1)"], stdin=gate_r)
    os.close(gate_r)
    try:
        assert not wait_exit(proc.pid, 0.05)  # still running: the deadline ends the wait
        os.close(gate_w)
        gate_w = -1
        started = time.monotonic()
        assert wait_exit(proc.pid, 30)
        assert time.monotonic() - started < 30
    finally:
        if gate_w >= 0:
            os.close(gate_w)
        proc.wait(30)
    assert wait_exit(proc.pid, 0)  # reaped: gone


def test_start_up_child_counts_the_preloaded_drivers_and_loads_the_rest(tmp_path: Path) -> None:
    moddir, sysfs, proc = _module_tree(tmp_path)
    (sysfs / "bus/virtio/devices/virtio0").mkdir()
    (sysfs / "bus/virtio/devices/virtio0/modalias").write_text(f"{VIRTIO_NIC}\n")
    (sysfs / "module/virtio_pci").mkdir()  # loaded by /init's preload
    kernel = FakeKernel(sysfs)
    loader = Loader(str(moddir), kernel, sysfs=str(sysfs), proc=str(proc))
    ended = subprocess.Popen(["true"])
    ended.wait(30)
    marks: list[tuple[str, float]] = []
    problems: list[str] = []
    nics, _links, _first = nics_and_links(loader, Deadline(5), str(sysfs), marks, problems, preload=ended.pid)
    assert nics == ["virtio_pci", "virtio_net"]
    assert kernel.loaded == ["net_failover", "virtio_net"]  # only what the preload left
    assert marks[0][0] == "/init's NIC preload ended"
    # without a preload, the same loader reports only what it loaded itself (the negative control)
    assert loader.load_nic_drivers(Deadline(5)) == []


def test_the_preloaded_interfaces_go_up_before_the_drivers_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moddir, sysfs, proc = _module_tree(tmp_path, loaded=("virtio_pci", "virtio_net"))
    eth0 = sysfs / "class/net/eth0"
    (eth0 / "device").mkdir(parents=True)
    (eth0 / "type").write_text("1\n")
    (eth0 / "ifindex").write_text("2\n")
    sent: list[list[int]] = []

    def fake_links_up(indexes: list[int], timeout: float = 2.0) -> dict[int, int]:
        sent.append(list(indexes))
        return dict.fromkeys(indexes, 0)

    monkeypatch.setattr(early_module, "links_up", fake_links_up)
    loader = Loader(str(moddir), FakeKernel(sysfs), sysfs=str(sysfs), proc=str(proc))
    ended = subprocess.Popen(["true"])
    ended.wait(30)
    marks: list[tuple[str, float]] = []
    nics, links, first = nics_and_links(loader, Deadline(5), str(sysfs), marks, [], preload=ended.pid)
    assert [what for what, _at in marks] == [
        "/init's NIC preload ended",
        "links up (eth0)",
        "NIC drivers loaded (virtio_pci)",
    ]
    assert sent == [[2]] and links == {"eth0": 0} and first is not None  # once, not again after the check
    assert nics == ["virtio_pci"]
