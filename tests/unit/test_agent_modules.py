"""Kernel module phase: modules.dep/alias/builtin and the loader, with a fake finit_module."""

from __future__ import annotations

import fnmatch
import io
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.kmod import ModuleIndex, literal_prefix, module_name, parse_index
from iscsiboot.agent.netup import InProcess
from iscsiboot.agent.options import AgentOptions
from iscsiboot.agent.phases.modules import Background, Loader, crypto_has, driverless_nics
from iscsiboot.agent.plan import NetResult
from iscsiboot.agent.report import Reporter
from iscsiboot.agent.results import ConfigResult
from iscsiboot.agent.runner import Agent, Env
from iscsiboot.model import BootConfig

S = "kernel/drivers/scsi"
DEP = f"""{S}/iscsi_tcp.ko: {S}/libiscsi_tcp.ko {S}/libiscsi.ko {S}/scsi_transport_iscsi.ko
{S}/libiscsi_tcp.ko: {S}/libiscsi.ko {S}/scsi_transport_iscsi.ko
kernel/drivers/scsi/libiscsi.ko: kernel/drivers/scsi/scsi_transport_iscsi.ko
kernel/drivers/scsi/scsi_transport_iscsi.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko
kernel/drivers/net/net_failover.ko:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
"""
ALIAS = """alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias virtio:d00000001v* virtio_net
"""
BUILTIN = "kernel/drivers/scsi/sd_mod.ko\nkernel/fs/squashfs/squashfs.ko\n"


def test_module_name() -> None:
    assert module_name("kernel/arch/x86/crypto/crc32c-intel.ko.xz") == "crc32c_intel"
    assert module_name("virtio_net") == "virtio_net"


def test_index_lookup_and_order() -> None:
    index = parse_index(DEP, ALIAS, BUILTIN)
    assert index.load_order("iscsi_tcp") == ["scsi_transport_iscsi", "libiscsi", "libiscsi_tcp", "iscsi_tcp"]
    assert index.lookup("crypto-crc32c") == ["crc32c_intel", "crc32c_generic"]
    assert index.lookup("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00") == ["virtio_pci"]
    assert index.lookup("sd_mod") == ["sd_mod"] and "sd_mod" in index.builtin
    assert index.lookup("nope") == []


GLOB = st.text(alphabet="ab*?[]!:0", max_size=8)


@given(patterns=st.lists(GLOB, max_size=6), wanted=st.text(alphabet="ab*?[]!:0", max_size=8))
def test_lookup_by_literal_prefix_is_plain_fnmatch(patterns: list[str], wanted: str) -> None:
    """Skipping patterns whose literal part does not start ``wanted`` changes no answer."""
    index = ModuleIndex({}, {}, tuple((p, f"m{i}") for i, p in enumerate(patterns)), frozenset())
    expected = [f"m{i}" for i, p in enumerate(patterns) if fnmatch.fnmatchcase(wanted, p)]
    assert index.lookup(wanted) == expected
    assert all(p.startswith(literal_prefix(p)) for p in patterns)


def _tree(tmp: Path, *, modular: bool = True, crc: bool = False) -> tuple[Path, Path, Path]:
    moddir, sysfs, proc = tmp / "lib/modules/6.1", tmp / "sys", tmp / "proc"
    moddir.mkdir(parents=True)
    (moddir / "modules.dep").write_text(DEP)
    (moddir / "modules.alias").write_text(ALIAS)
    (moddir / "modules.builtin").write_text(BUILTIN)
    (sysfs / "module").mkdir(parents=True)
    proc.mkdir()
    if modular:
        (proc / "modules").write_text("")
    (proc / "crypto").write_text("name         : crc32c\ndriver       : crc32c-generic\n" if crc else "")
    return moddir, sysfs, proc


class FakeKernel:
    """finit_module stand-in: records paths, marks /sys/module/<name>, fails on request."""

    def __init__(self, sysfs: Path, fail: set[str] | None = None) -> None:
        self.sysfs = sysfs
        self.fail = fail or set()
        self.loaded: list[str] = []

    def __call__(self, path: str, params: str = "") -> None:
        name = module_name(path)
        if name in self.fail:
            raise OSError(19, "No such device", path)
        self.loaded.append(name)
        (self.sysfs / "module" / name).mkdir()


def test_loader_loads_dependencies_once(tmp_path: Path) -> None:
    moddir, sysfs, proc = _tree(tmp_path)
    kernel = FakeKernel(sysfs)
    loader = Loader(str(moddir), kernel, sysfs=str(sysfs), proc=str(proc))
    loader.ensure("iscsi_tcp")
    loader.ensure("iscsi_tcp")
    assert kernel.loaded == ["scsi_transport_iscsi", "libiscsi", "libiscsi_tcp", "iscsi_tcp"]
    assert loader.ensure("sd_mod") == []  # built in


def test_crc32c_alias_falls_back_and_skips_when_present(tmp_path: Path) -> None:
    moddir, sysfs, proc = _tree(tmp_path)
    kernel = FakeKernel(sysfs, fail={"crc32c_intel"})
    loader = Loader(str(moddir), kernel, sysfs=str(sysfs), proc=str(proc))
    assert loader.ensure("crypto-crc32c") == ["crc32c_generic"]
    moddir2, sysfs2, proc2 = _tree(tmp_path / "b", crc=True)
    assert crypto_has("crc32c", str(proc2 / "crypto"))
    assert (
        Loader(str(moddir2), FakeKernel(sysfs2), sysfs=str(sysfs2), proc=str(proc2)).ensure("crypto-crc32c")
        == []
    )


def test_missing_module_is_a_clear_error(tmp_path: Path) -> None:
    moddir, sysfs, proc = _tree(tmp_path)
    loader = Loader(str(moddir), FakeKernel(sysfs), sysfs=str(sysfs), proc=str(proc))
    with pytest.raises(PhaseError, match="'8021q' is not in") as info:
        loader.ensure("8021q")
    assert info.value.phase == "modules" and "initramfs" in (info.value.fix or "")
    failing = Loader(str(moddir), FakeKernel(sysfs, fail={"e1000"}), sysfs=str(sysfs), proc=str(proc))
    with pytest.raises(PhaseError, match="cannot load") as info:
        failing.ensure("e1000")
    assert "No such device" in (info.value.evidence or "")


def test_no_modules_dep_and_non_modular_kernel(tmp_path: Path) -> None:
    moddir, sysfs, proc = _tree(tmp_path)
    (moddir / "modules.dep").unlink()
    with pytest.raises(PhaseError, match=r"no modules\.dep"):
        Loader(str(moddir), FakeKernel(sysfs), sysfs=str(sysfs), proc=str(proc)).ensure("iscsi_tcp")
    (proc / "modules").unlink()  # CONFIG_MODULES=n: everything is built in
    assert Loader(str(moddir), FakeKernel(sysfs), sysfs=str(sysfs), proc=str(proc)).ensure("iscsi_tcp") == []


def test_overlay_index_first_then_the_base_index(tmp_path: Path) -> None:
    """An overlay keeps its own index; the base's is read only for what the overlay does not know."""
    moddir, sysfs, proc = _tree(tmp_path)  # the base: its index knows e1000 and the iSCSI modules
    own = tmp_path / "usr/lib/iscsiboot/modules/6.1"
    own.mkdir(parents=True)
    (own / "modules.dep").write_text("kernel/fs/squashfs/squashfs.ko:\nkernel/crypto/crc32c_generic.ko:\n")
    (own / "modules.alias").write_text("alias fs-squashfs squashfs\n")
    kernel = FakeKernel(sysfs)
    loader = Loader(str(moddir), kernel, sysfs=str(sysfs), proc=str(proc), overlay_index=str(own))
    loader.index_now()
    assert loader.ensure("fs-squashfs") == ["squashfs"]  # an alias only the overlay's index has
    assert len(loader.indexes) == 1  # the base's index was not needed
    assert loader.ensure("iscsi_tcp")[-1] == "iscsi_tcp"  # only the base's index knows it
    assert kernel.loaded[0] == "squashfs" and len(loader.indexes) == 2
    # the module files are in the modules folder whichever index named them
    assert loader.ensure("e1000") == ["e1000"]
    # without the overlay's index (the full image) the base's is the only one
    alone = Loader(
        str(moddir), FakeKernel(sysfs), sysfs=str(sysfs), proc=str(proc), overlay_index=str(tmp_path / "x")
    )
    alone.index_now()
    assert [i is None for i in alone.indexes] == [True, False]
    # neither: a clear error
    (moddir / "modules.dep").unlink()
    none = Loader(
        str(moddir), FakeKernel(sysfs), sysfs=str(sysfs), proc=str(proc), overlay_index=str(tmp_path / "x")
    )
    with pytest.raises(PhaseError, match=r"no modules\.dep"):
        none.ensure("iscsi_tcp")


def test_nic_driver_from_pci_then_virtio(tmp_path: Path) -> None:
    moddir, sysfs, proc = _tree(tmp_path)
    pci = sysfs / "bus/pci/devices/0000:00:03.0"
    pci.mkdir(parents=True)
    (pci / "class").write_text("0x020000\n")
    (pci / "modalias").write_text("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n")
    disk = sysfs / "bus/pci/devices/0000:00:04.0"
    disk.mkdir(parents=True)
    (disk / "class").write_text("0x010000\n")
    (disk / "modalias").write_text("pci:v00008086d0000100Esv0sd0bc01sc00i00\n")

    class Virtio(FakeKernel):
        def __call__(self, path: str, params: str = "") -> None:
            super().__call__(path, params)
            if module_name(path) == "virtio_pci":  # the bus driver reveals the NIC
                dev = self.sysfs / "bus/virtio/devices/virtio0"
                dev.mkdir(parents=True)
                (dev / "modalias").write_text("virtio:d00000001v00001AF4\n")

    kernel = Virtio(sysfs)
    loader = Loader(str(moddir), kernel, sysfs=str(sysfs), proc=str(proc))
    assert loader.load_nic_drivers(Deadline(5)) == ["virtio_pci", "virtio_net"]
    assert "e1000" not in kernel.loaded  # not a network-class device


def test_background_loading_reports_errors(tmp_path: Path) -> None:
    moddir, sysfs, proc = _tree(tmp_path)
    gate = threading.Event()

    class Slow(FakeKernel):
        def __call__(self, path: str, params: str = "") -> None:
            gate.wait(5)
            super().__call__(path, params)

    loader = Loader(str(moddir), Slow(sysfs), sysfs=str(sysfs), proc=str(proc))
    bg = Background(loader, ("iscsi_tcp", "8021q")).start()
    with pytest.raises(PhaseError, match="still loading"):
        bg.wait(Deadline(0.05))
    gate.set()
    with pytest.raises(PhaseError, match="8021q"):
        bg.wait(Deadline(5))
    assert "iscsi_tcp" in loader.loaded


class SlowKernel(FakeKernel):
    """Holds the load of one module until released; EEXIST for a module loaded twice, as Linux."""

    def __init__(self, sysfs: Path, hold: str) -> None:
        super().__init__(sysfs)
        self.hold = hold
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self, path: str, params: str = "") -> None:
        name = module_name(path)
        if name == self.hold:
            self.holding.set()
            assert self.release.wait(10)
        if (self.sysfs / "module" / name).exists():
            raise OSError(17, "File exists", path)
        super().__call__(path, params)


def test_threads_loading_different_modules_do_not_wait_for_each_other(tmp_path: Path) -> None:
    """PID 1's start-up thread loads NIC drivers while the config phase asks for another module."""
    moddir, sysfs, proc = _tree(tmp_path)
    kernel = SlowKernel(sysfs, hold="virtio_pci_modern_dev")
    loader = Loader(str(moddir), kernel, sysfs=str(sysfs), proc=str(proc))
    early = threading.Thread(target=loader.ensure, args=("virtio_pci",))
    early.start()
    assert kernel.holding.wait(10)
    assert loader.ensure("iscsi_tcp")[-1] == "iscsi_tcp"  # while virtio_pci's load is held
    kernel.release.set()
    early.join(10)
    assert "virtio_pci" in kernel.loaded and kernel.loaded.count("scsi_transport_iscsi") == 1
    assert sorted(loader.loaded) == sorted(set(loader.loaded))


def test_a_phase_waits_only_for_its_own_modules(tmp_path: Path) -> None:
    """The login needs iscsi_tcp, not the large module still loading behind it in the background."""
    moddir, sysfs, proc = _tree(tmp_path)
    kernel = SlowKernel(sysfs, hold="e1000")  # stands for ext4, the last and largest
    loader = Loader(str(moddir), kernel, sysfs=str(sysfs), proc=str(proc))
    bg = Background(loader, ("iscsi_tcp", "e1000")).start()
    assert kernel.holding.wait(10)
    bg.ensure_now(("iscsi_tcp",), Deadline(5))  # returns while e1000 is held
    assert "iscsi_tcp" in kernel.loaded and "e1000" not in kernel.loaded
    with pytest.raises(PhaseError, match="still loading"):
        bg.wait(Deadline(0.05))
    kernel.release.set()
    bg.wait(Deadline(10))
    assert "e1000" in kernel.loaded
    with pytest.raises(PhaseError, match=r"no_such_module|not found|unknown"):
        bg.ensure_now(("no_such_module",), Deadline(5))


def test_a_module_loaded_meanwhile_is_not_an_error(tmp_path: Path) -> None:
    moddir, sysfs, proc = _tree(tmp_path)
    kernel = FakeKernel(sysfs)

    def load(path: str, _params: str) -> None:  # another loader (udev, a second thread) wins the race
        kernel(path)
        raise OSError(17, "File exists", path)

    loader = Loader(str(moddir), load, sysfs=str(sysfs), proc=str(proc))
    assert loader.ensure("e1000") == ["e1000"]


def _pci_nic(sysfs: Path, slot: str, vendor: str, device: str, *, driver: bool) -> None:
    dev = sysfs / "bus/pci/devices" / slot
    dev.mkdir(parents=True)
    (dev / "class").write_text("0x020000\n")
    (dev / "vendor").write_text(f"0x{vendor}\n")
    (dev / "device").write_text(f"0x{device}\n")
    if driver:
        (dev / "driver").mkdir()


def test_a_nic_without_driver_is_named_when_no_interface_appears(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    _pci_nic(sysfs, "0000:00:03.0", "10ec", "8139", driver=False)
    _pci_nic(sysfs, "0000:00:04.0", "1af4", "1000", driver=True)
    storage = sysfs / "bus/pci/devices/0000:00:05.0"
    storage.mkdir(parents=True)
    (storage / "class").write_text("0x010000\n")
    assert driverless_nics(str(sysfs)) == ["0000:00:03.0 (10ec:8139)"]
    assert driverless_nics(str(tmp_path / "none")) == []

    reporter = Reporter(io.StringIO(), kmsg=None, report_path=None)
    agent = Agent("", AgentOptions(), reporter, Env(sysfs=str(sysfs)))

    class NoInterface(InProcess):
        def bring_up(self, *args: object, **kwargs: object) -> NetResult:
            raise PhaseError(
                "network", "no network interface matches an Ethernet interface", cause="no-interface"
            )

    agent.network_up = NoInterface(AgentOptions(), resolv_conf=None)
    with pytest.raises(PhaseError) as failed:
        agent.network(ConfigResult(BootConfig()), Deadline(1))
    assert "no driver claimed PCI network device 0000:00:03.0 (10ec:8139)" in str(failed.value.evidence)
    assert "--module" in str(failed.value.fix)
