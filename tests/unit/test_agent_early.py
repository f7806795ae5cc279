"""PID 1's start-up work: NIC drivers, links up, base modules and imports before the config phase."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

from iscsiboot.agent.phases.modules import Loader
from iscsiboot.agent.startup.early import (
    Early,
    ack_errors,
    ethernet_links,
    link_up_request,
    peak_rss_kib,
)
from iscsiboot.agent.transport import MODULES, Transport
from iscsiboot.initramfs.pyruntime import stage_package

BASE_MODULES = MODULES[Transport.KERNEL].base


def test_link_up_request_is_rtm_newlink_with_iff_up() -> None:
    msg = link_up_request(7, 3)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq, pid) == (32, 16, 0x5, 3, 0)
    family, _pad, _type, index, up, change = struct.unpack_from("=BBHiII", msg, 16)
    assert (family, index, up, change) == (socket.AF_UNSPEC, 7, 1, 1)


def test_ack_errors_reads_each_acknowledgement() -> None:
    def ack(seq: int, err: int) -> bytes:
        return struct.pack("=IHHII", 36, 2, 0, seq, 0) + struct.pack("=i", err) + bytes(16)

    assert ack_errors(ack(1, 0) + ack(2, -19)) == {1: 0, 2: 19}
    assert ack_errors(b"\x00" * 8) == {}


def test_ethernet_links_are_hardware_ethernet_only(tmp_path: Path) -> None:
    net = tmp_path / "class" / "net"
    for name, kind, index, hardware in (("eth0", 1, 2, True), ("lo", 772, 1, False), ("br0", 1, 3, False)):
        (net / name).mkdir(parents=True)
        (net / name / "type").write_text(f"{kind}\n")
        (net / name / "ifindex").write_text(f"{index}\n")
        if hardware:
            (net / name / "device").mkdir()
    assert ethernet_links(str(tmp_path)) == [("eth0", 2)]
    assert ethernet_links(str(tmp_path / "none")) == []


def test_peak_memory_of_this_process(tmp_path: Path) -> None:
    peak = peak_rss_kib()
    assert peak is not None and peak > 1024  # an interpreter takes more than 1 MiB
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text("Name:\tinit\nVmHWM:\t   23512 kB\nVmRSS:\t 100 kB\n")
    assert peak_rss_kib(str(tmp_path)) == 23512
    assert peak_rss_kib(str(tmp_path / "none")) is None


class FakeLoader(Loader):
    """Records the order of the kernel work; the real loader is tested in test_agent_modules."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()

    def index_now(self) -> None:
        self.calls.append("index")

    def load_nic_drivers(self, deadline: object, *, preloaded: bool = False) -> list[str]:
        self.calls.append("nics")
        return ["virtio_net"]

    def ensure(self, name: str) -> list[str]:
        self.release.wait(5)
        self.calls.append(name)
        if name == "ext4":
            raise OSError(2, "no ext4 here")
        return [name]


def test_early_loads_nics_first_then_base_modules_and_imports_in_parallel(tmp_path: Path) -> None:
    loader = FakeLoader()
    imported = threading.Event()
    early = Early(loader, base_modules=BASE_MODULES, sysfs=str(tmp_path), imports=imported.set).start()
    assert early.wait_nics(5)
    assert early.nics == ["virtio_net"]
    assert imported.wait(5)  # the imports do not wait for the modules
    assert early.kernel.is_alive()  # held in ensure() until released
    loader.release.set()
    early.kernel.join(5)
    assert early.ready.is_set()
    assert loader.calls == ["index", "nics", *BASE_MODULES]
    assert early.links == {} and early.first_netlink is not None
    assert any("ext4" in p for p in early.problems)  # recorded, not raised: the phases report
    shown = early.timeline()
    assert "NIC drivers loaded (virtio_net) +" in shown and "base modules loaded +" in shown


# Each costs a slow guest tens of milliseconds to import (python -X importtime under TCG), and PID 1
# imports what it needs before its first fork (the NIC drivers) on the boot's critical path.
HEAVY = frozenset(
    {"re", "enum", "dataclasses", "inspect", "pathlib", "typing", "json", "socket", "threading",
     "collections", "contextlib", "functools", "signal", "fnmatch", "selectors", "ipaddress"}
)  # fmt: skip


def _printed_modules(staged: Path, code: str) -> set[str]:
    """The module names ``code`` prints, run with ``-S`` on the package staged in ``staged``."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={"PYTHONPATH": str(staged)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_pid1_imports_nothing_heavy_before_it_forks_its_start_up_child(tmp_path: Path) -> None:
    """What PID 1 imports up to the fork, and the start-up child up to its first netlink call."""
    stage_package(tmp_path)
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import iscsiboot.agent.init, iscsiboot.agent.sysc, iscsiboot.agent.startup.early\n"
        "import iscsiboot.agent.phases.modules, iscsiboot.agent.startup.netproc\n"
        "from iscsiboot.agent.startup.netproc import encode_plain\n"
        "from iscsiboot.agent.startup.early import link_up_request, ethernet_links\n"
        "from iscsiboot.agent.kmod import glob_match, read_index\n"
        "encode_plain({'a': [1.5, None]}); link_up_request(2, 1); ethernet_links('/nonexistent')\n"
        "glob_match('pci:v00001AF4d00001000sv1', 'pci:v00001AF4d00001000sv*'); read_index('/nonexistent')\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    imported = _printed_modules(tmp_path, code)
    assert "iscsiboot.agent.phases.modules" in imported
    assert not imported & HEAVY, json.dumps(sorted(imported & HEAVY))


def test_the_kernel_login_and_the_recovery_keeper_do_not_import_construct(tmp_path: Path) -> None:
    """NETLINK_ISCSI's structures are ``struct``'s: construct stays off the kernel transport's boot path."""
    stage_package(tmp_path)
    code = (
        "import sys\n"
        "import iscsiboot.agent.backends.kernel, iscsiboot.agent.keeper.recovery, iscsiboot.iscsi.netlink\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    imported = _printed_modules(tmp_path, code)
    assert "iscsiboot.iscsi.netlink" in imported
    assert "construct" not in imported


# tempfile imports shutil (and with it the compressors) and random (hashlib's SHA-512, math,
# bisect): a slow guest's PID 1 paid for them on its way to the mounts, to write resolv.conf
# and the renewal's udhcpc script, and to find e2fsck.
TEMPFILE_AND_CO = frozenset({"tempfile", "shutil", "random", "bz2", "lzma"})


def test_pid1_writes_files_and_finds_programs_without_tempfile_or_shutil(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    stage_package(stage)
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import sys\n"
        "import iscsiboot.agent.phases.login, iscsiboot.agent.phases.lease, iscsiboot.agent.phases.disk\n"
        "import iscsiboot.agent.phases.mount, iscsiboot.agent.backends.kernel\n"
        "import iscsiboot.agent.keeper.launch\n"
        "from iscsiboot.output import write_atomic\n"
        "from iscsiboot.proc import find\n"
        "from iscsiboot.agent.phases.lease import remove_script, write_script\n"
        f"write_atomic({str(work / 'resolv.conf')!r}, 'nameserver 10.0.2.3\\n')\n"
        "folder, argv = write_script(['udhcpc', '/bin/sh'], 'renewal.')\n"
        "remove_script(folder)\n"
        "find('sh')\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    imported = _printed_modules(stage, code)
    assert "iscsiboot.agent.phases.lease" in imported
    assert not imported & TEMPFILE_AND_CO, sorted(imported & TEMPFILE_AND_CO)
    assert (work / "resolv.conf").read_text() == "nameserver 10.0.2.3\n"
    assert [p.name for p in work.iterdir()] == ["resolv.conf"]  # no temporary file left behind


def test_pid1_reads_the_ibft_without_the_table_builder(tmp_path: Path) -> None:
    """The config phase reads the kernel's view of the iBFT, values only: no layout, no builder."""
    stage_package(tmp_path)
    code = (
        "import sys\n"
        "import iscsiboot.agent.phases.config, iscsiboot.ibft.sources, iscsiboot.ibft.mapping\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    imported = _printed_modules(tmp_path, code)
    assert "iscsiboot.ibft.mapping" in imported
    assert "iscsiboot.ibft.build" not in imported
