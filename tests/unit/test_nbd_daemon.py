"""The NBD daemon's pieces without a kernel device: messages, /dev/nbdN set-up against a fake
sysfs and ioctl, the launch command, and the agent's backend against scripted daemons."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from iscsiboot.agent import daemons
from iscsiboot.agent.backends import nbd as backend_mod
from iscsiboot.agent.backends.nbd import NbdBackend, Spawned
from iscsiboot.agent.backends.result import Cause
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.nbd import device, resident
from iscsiboot.agent.nbd.launch import daemon_command
from iscsiboot.agent.nbd.messages import (
    DaemonConfig,
    Failed,
    LoginFailed,
    Problem,
    Ready,
    status_from_json,
)
from iscsiboot.agent.nbd.protocol import BLKRRPART, Geometry, Ioctl
from iscsiboot.errors import IscsibootError, ParseError
from iscsiboot.model import Chap, Target
from iscsiboot.secret import Secret

IQN = "iqn.2026-11.org.iscsiboot:nbd"
ME = "iqn.2026-11.org.iscsiboot:client"
CHAP = Chap("user", Secret("chap-secret-123"))
MUTUAL = Chap("target", Secret("mutual-secret-456"))


# ---------------------------------------------------------------- messages


def test_the_configuration_round_trips_and_hides_its_secrets() -> None:
    config = DaemonConfig(
        "10.0.0.1", 3260, IQN, 1, ME, CHAP, MUTUAL, isid=bytes.fromhex("80123456789a"), device=3, timeout=5.0
    )
    text = config.to_json()
    assert DaemonConfig.from_json(text) == config
    assert "chap-secret-123" in text  # the pipe carries them
    assert "chap-secret-123" not in repr(config) and "mutual-secret-456" not in repr(config)
    plain = DaemonConfig("10.0.0.1", 3260, IQN, 0, ME)
    assert DaemonConfig.from_json(plain.to_json()) == plain


@pytest.mark.parametrize("text", ["", "[]", "{}", '{"host": "x"}', "x" * 70000, '{"host":1,"port":"a"}'])
def test_a_bad_configuration_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        DaemonConfig.from_json(text)


@pytest.mark.parametrize(
    "status",
    [
        LoginFailed(Cause.AUTH, "login refused: authentication failure"),
        Ready("/dev/nbd0", 1 << 30, 512, True, "80aabbccddee", ("nbd0p1", "nbd0p2"), 3),
        Ready(None, 4096, 4096, False, "80aabbccddee"),
        Failed(Problem.BLOCK_SIZE, "1024-byte blocks", "use 512"),
    ],
)
def test_status_lines_round_trip(status: LoginFailed | Ready | Failed) -> None:
    line = status.to_json()
    assert "\n" not in line
    assert status_from_json(line) == status


@pytest.mark.parametrize(
    "text", ['{"status": "what"}', '{"status": "ready"}', '{"status": "failed", "cause": "x"}']
)
def test_a_bad_status_line_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        status_from_json(text)


def test_the_daemon_refuses_odd_block_sizes_and_empty_luns() -> None:
    assert resident.refusal(Geometry(1 << 20, 512), "LUN 1") is None
    assert resident.refusal(Geometry(1 << 20, 4096), "LUN 1") is None
    odd = resident.refusal(Geometry(1 << 20, 1024), "LUN 1")
    assert odd is not None and odd.cause is Problem.BLOCK_SIZE and "1024" in odd.what
    empty = resident.refusal(Geometry(0, 512), "LUN 1")
    assert empty is not None and empty.cause is Problem.EMPTY


def test_daemon_arguments() -> None:
    argv = ["--config-fd", "5", "--status-fd", "6", "--log-fd", "7"]
    assert daemons.parse_pipes(argv) == daemons.Pipes(5, 6)
    for bad in (["--config-fd", "5"], ["--config-fd", "x", "--status-fd", "6"], ["--other", "1"]):
        with pytest.raises(IscsibootError):
            daemons.parse_pipes(bad)


# ---------------------------------------------------------------- the device


def fake_sysfs(root: Path, devices: dict[int, tuple[str, bool]]) -> Path:
    """/sys/block/nbdN with ``size`` and, when in use, ``pid``."""
    for index, (size, used) in devices.items():
        base = root / "block" / f"nbd{index}"
        base.mkdir(parents=True)
        (base / "size").write_text(size + "\n")
        (base / "dev").write_text(f"43:{index * 32}\n")
        if used:
            (base / "pid").write_text("1234\n")
    (root / "block" / "sda").mkdir(parents=True, exist_ok=True)
    return root


def test_choose_a_free_device(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, {0: ("2048", True), 1: ("0", False), 2: ("0", False), 10: ("0", False)})
    assert device.indexes(sysfs) == [0, 1, 2, 10]
    assert device.choose(sysfs, None) == 1
    assert device.choose(sysfs, 10) == 10
    with pytest.raises(device.DeviceError, match="in use"):
        device.choose(sysfs, 0)
    with pytest.raises(device.DeviceError, match="does not exist"):
        device.choose(sysfs, 7)


def test_no_nbd_devices(tmp_path: Path) -> None:
    with pytest.raises(device.DeviceError, match="no NBD devices"):
        device.choose(fake_sysfs(tmp_path, {}), None)
    sysfs = fake_sysfs(tmp_path / "all", {0: ("8", True)})
    with pytest.raises(device.DeviceError, match="in use"):
        device.choose(sysfs, None)


class FakeIoctl:
    """Records ioctls; NBD_DO_IT blocks until released, like the kernel's, and notes the thread's mask."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.release = threading.Event()
        self.blocked: set[int | signal.Signals] = set()

    def __call__(self, fd: int, request: int, arg: int) -> object:
        self.calls.append((request, arg))
        if request == Ioctl.DO_IT:
            self.blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            assert self.release.wait(10)
        return 0


def test_attach_sets_the_geometry_then_the_socket_and_runs_do_it_with_signals_blocked(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", {0: ("0", False)})
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nbd0").write_bytes(b"")  # stands for the node
    fake = FakeIoctl()
    geometry = Geometry(1 << 30, 4096, trim=True)
    attached = device.attach(0, 99, geometry, log=lambda _t: None, dev=dev, sysfs=sysfs, ioctl=fake)
    deadline = time.monotonic() + 10
    while (Ioctl.DO_IT, 0) not in fake.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.calls[:5] == [
        (Ioctl.SET_BLKSIZE, 4096),
        (Ioctl.SET_SIZE_BLOCKS, (1 << 30) // 4096),
        (Ioctl.SET_FLAGS, int(geometry.flags)),
        (Ioctl.SET_SOCK, 99),
        (Ioctl.DO_IT, 0),
    ]
    assert not any(call[0] == Ioctl.SET_TIMEOUT for call in fake.calls)  # requests wait during a reconnect
    assert {signal.SIGTERM, signal.SIGINT, signal.SIGHUP} <= fake.blocked
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # only that thread
    fake.release.set()
    assert attached.done.wait(10)
    assert fake.calls[-2:] == [(Ioctl.CLEAR_QUE, 0), (Ioctl.CLEAR_SOCK, 0)]
    os.close(attached.fd)


def test_settle_asks_for_the_partitions_when_they_do_not_appear(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", {0: ("2048", False)})
    (sysfs / "block" / "nbd0" / "queue").mkdir()
    node = tmp_path / "nbd0"
    node.write_bytes(b"")
    attached = device.Attached(0, node, -1)
    fake = FakeIoctl()

    def ioctl(fd: int, request: int, arg: int) -> object:
        fake(fd, request, arg)
        (sysfs / "block" / "nbd0" / "nbd0p1").mkdir()  # the kernel read the table
        return 0

    found = device.settle(
        attached, Geometry(2048 * 512, 512), expect_table=True, log=lambda _t: None, sysfs=sysfs, ioctl=ioctl
    )
    assert found == ("nbd0p1",)
    assert fake.calls == [(BLKRRPART, 0)]
    assert (sysfs / "block" / "nbd0" / "queue" / "max_sectors_kb").read_text() == str(device.MAX_SECTORS_KB)


def test_settle_leaves_partitions_that_appeared_alone(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", {2: ("2048", False)})
    for name in ("nbd2p10", "nbd2p2", "nbd2p1"):
        (sysfs / "block" / "nbd2" / name).mkdir()
    node = tmp_path / "nbd2"
    node.write_bytes(b"")
    fake = FakeIoctl()
    found = device.settle(
        device.Attached(2, node, -1),
        Geometry(2048 * 512, 512),
        expect_table=True,
        log=lambda _t: None,
        sysfs=sysfs,
        ioctl=fake,
    )
    assert found == ("nbd2p1", "nbd2p2", "nbd2p10")
    assert fake.calls == []


def test_partition_table_signature() -> None:
    assert device.has_partition_table(bytes(510) + b"\x55\xaa")
    assert not device.has_partition_table(bytes(512))


# ---------------------------------------------------------------- the launch command


def test_the_launch_command_runs_the_daemon_module_under_an_at_name() -> None:
    program, argv = daemon_command("@iscsiboot-nbd")
    assert program == sys.executable
    assert argv[0] == "@iscsiboot-nbd" and "-S" in argv
    assert "iscsiboot.agent.nbd.daemon" in argv[-1]
    # the command finds the package although argv[0] says nothing of the interpreter's place
    code = argv[-1].replace("from iscsiboot.agent.nbd.daemon import main\nsys.exit(main())\n", "")
    check = code + "import iscsiboot.agent.nbd.resident\nprint(sys.argv[0])\n"
    out = subprocess.run(
        [*argv[:-1], check], executable=program, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "-c"


@pytest.mark.parametrize(
    ("argv0", "resident"),
    [
        ("@iscsiboot-nbd", "iscsiboot.agent.nbd.resident"),
        ("@iscsiboot-keeper", "iscsiboot.agent.keeper.resident"),
    ],
)
def test_a_daemon_imports_its_modules_without_inspect(argv0: str, resident: str) -> None:
    """dataclasses comes in through the code cache's module, which keeps ``inspect`` out (and ast,
    dis, tokenize: a slow guest's tenth of a second, beside the agent's disk and mount phases)."""
    from iscsiboot.agent.daemons import daemon_command as command  # noqa: PLC0415

    program, argv = command(argv0, "iscsiboot.agent.keeper.daemon")
    head = argv[-1].split("from iscsiboot.agent.keeper.daemon import main")[0]
    probe = head + f"import {resident}\nprint(sorted({{'inspect', 'ast', 'dis'}} & set(sys.modules)))\n"
    out = subprocess.run(
        [*argv[:-1], probe], executable=program, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    # the negative control: the same imports without the code cache's module first
    bare = probe.replace("import iscsiboot.agent.startup.codecache\n", "")
    assert bare != probe
    out = subprocess.run(
        [*argv[:-1], bare], executable=program, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "inspect" in out.stdout


def test_the_daemon_without_options_says_why_in_its_log(tmp_path: Path) -> None:
    program, argv = daemon_command("@iscsiboot-nbd")
    log = tmp_path / "log"
    with open(log, "wb") as handle:
        fd = handle.fileno()
        out = subprocess.run(
            [*argv, "--log-fd", str(fd)],
            executable=program,
            pass_fds=[fd],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 2
    assert (
        log.read_text().startswith("<6>iscsiboot-nbd: ") or "iscsiboot-nbd: cannot start" in log.read_text()
    )


# ---------------------------------------------------------------- the agent's backend


def scripted(line: str | None, *, program: tuple[str, ...] = ("true",)) -> tuple[list[DaemonConfig], object]:
    """A spawn that starts ``program`` and puts ``line`` on the status pipe."""
    seen: list[DaemonConfig] = []

    def start(config: DaemonConfig) -> Spawned:
        seen.append(config)
        r, w = os.pipe()
        if line is not None:
            os.write(w, (line + "\n").encode())
        process = subprocess.Popen(program, pass_fds=[w])
        os.close(w)
        return Spawned(process, r)

    return seen, start


TARGET = Target(name=IQN, address="10.0.0.1", port=3260, lun=2, chap=CHAP)


def test_a_ready_daemon_gives_a_disk() -> None:
    seen, start = scripted(Ready("/dev/nbd1", 1 << 30, 4096, True, "80aabbccddee", ("nbd1p1",), 2).to_json())
    backend = NbdBackend(start=start)  # type: ignore[arg-type]
    result = backend.login(TARGET, ME, Deadline(10))
    assert result.cause is Cause.OK and "/dev/nbd1" in result.evidence
    (disk,) = backend.disks
    assert (disk.device, disk.size, disk.block_size, disk.trim, disk.lun, disk.partitions) == (
        "/dev/nbd1",
        1 << 30,
        4096,
        True,
        2,
        ("nbd1p1",),
    )
    assert backend.disk_for(TARGET) == disk
    assert seen[0].chap == CHAP and seen[0].lun == 2 and seen[0].host == "10.0.0.1"
    again = backend.login(TARGET, ME, Deadline(10))
    assert again.cause is Cause.SESSION_EXISTS and len(seen) == 1


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        (LoginFailed(Cause.AUTH, "login refused: authentication failure").to_json(), Cause.AUTH),
        (LoginFailed(Cause.NOT_FOUND, "not found").to_json(), Cause.NOT_FOUND),
        (Failed(Problem.BLOCK_SIZE, "1024-byte blocks", "use 512").to_json(), Cause.UNUSABLE_LUN),
        (Failed(Problem.NO_DEVICE, "no nbd", "load nbd").to_json(), Cause.NO_NBD),
        ("not json", Cause.OTHER),
        (None, Cause.OTHER),  # the daemon ended without a word
    ],
)
def test_failures_become_causes(line: str | None, cause: Cause) -> None:
    _seen, start = scripted(line)
    backend = NbdBackend(start=start)  # type: ignore[arg-type]
    result = backend.login(TARGET, ME, Deadline(10))
    assert result.cause is cause
    assert not result.ok and backend.disks == ()
    assert "chap-secret-123" not in result.evidence


def test_a_silent_daemon_times_out_and_is_ended() -> None:
    procs: list[subprocess.Popen[bytes]] = []
    _seen, start = scripted(None, program=("sleep", "30"))

    def keep(config: DaemonConfig) -> Spawned:
        spawned: Spawned = start(config)  # type: ignore[operator]
        procs.append(spawned.process)
        return spawned

    t0 = time.monotonic()
    result = NbdBackend(start=keep).login(TARGET, ME, Deadline(0.5))
    assert result.cause is Cause.TIMEOUT
    assert time.monotonic() - t0 < 5
    assert procs[0].poll() is not None  # killed and collected


def test_the_daemon_name_marks_a_root_storage_daemon() -> None:
    assert backend_mod.ARGV0.startswith("@")


def test_a_target_without_a_lun_gets_the_lun_the_daemon_chose() -> None:
    """No LUN named: the daemon serves the lowest disk LUN and says which; the disk carries it."""
    seen, start = scripted(Ready("/dev/nbd0", 1 << 20, 512, False, "80aabbccddee", (), 1).to_json())
    backend = NbdBackend(start=start)  # type: ignore[arg-type]
    unnamed = Target(name=IQN, address="10.0.0.1", port=3260)
    assert backend.login(unnamed, ME, Deadline(10)).ok
    assert seen[0].lun is None and DaemonConfig.from_json(seen[0].to_json()).lun is None
    (disk,) = backend.disks
    assert disk.lun == 1 and backend.disk_for(unnamed) == disk
    assert backend.disk_for(Target(name=IQN, address="10.0.0.1", port=3260, lun=2)) is None


def test_no_disk_lun_is_an_unusable_lun() -> None:
    _seen, start = scripted(Failed(Problem.NO_DISK, f"{IQN} maps no disk LUN to {ME}", "map one").to_json())
    result = NbdBackend(start=start).login(TARGET, ME, Deadline(10))  # type: ignore[arg-type]
    assert result.cause is Cause.UNUSABLE_LUN and "maps no disk LUN" in result.evidence
