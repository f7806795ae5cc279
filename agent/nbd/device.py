"""/dev/nbdN: find a free one, hand it a socket and the geometry, run NBD_DO_IT (thin I/O).

The legacy ioctl interface (no netlink, no nbd-client): NBD_SET_BLKSIZE,
NBD_SET_SIZE_BLOCKS, NBD_SET_FLAGS, NBD_SET_SOCK, then NBD_DO_IT, which blocks
while the device is up.  No NBD_SET_TIMEOUT: without a timeout the kernel's
requests wait while the server logs in again.  NBD_DO_IT runs in a thread
that blocks every signal: a signal delivered to that ioctl makes the kernel
tear the device down.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from iscsiboot.agent.nbd.protocol import BLKRRPART, MAX_REQUEST, Geometry, Ioctl
from iscsiboot.errors import EnvironmentProblem

MAX_SECTORS_KB = MAX_REQUEST // 1024  # the largest request the kernel may send (the server's buffer)
THREAD_STACK = 256 * 1024  # every page of a thread's stack is locked (mlockall): keep them small


class DeviceError(EnvironmentProblem):
    """No usable /dev/nbdN, or the kernel refused its set-up."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def indexes(sysfs: Path) -> list[int]:
    """The nbd devices the kernel has, in order."""
    out = []
    with contextlib.suppress(OSError):
        for entry in (sysfs / "block").iterdir():
            number = entry.name[3:]
            if entry.name.startswith("nbd") and number.isascii() and number.isdigit():
                out.append(int(number))
    return sorted(out)


def is_free(sysfs: Path, index: int) -> bool:
    """No server holds it (no ``pid`` file) and it has no size."""
    base = sysfs / "block" / f"nbd{index}"
    return base.is_dir() and not (base / "pid").exists() and _read(base / "size") in ("0", None)


def choose(sysfs: Path, wanted: int | None) -> int:
    """The nbd index to use: ``wanted`` when it is free, else the first free one."""
    have = indexes(sysfs)
    if not have:
        raise DeviceError(
            "the kernel has no NBD devices (/sys/block/nbd* is missing)",
            fix="load the nbd module (CONFIG_BLK_DEV_NBD) before the login",
        )
    if wanted is not None:
        if wanted not in have:
            raise DeviceError(f"/dev/nbd{wanted} does not exist (the kernel has nbd0-nbd{have[-1]})")
        if not is_free(sysfs, wanted):
            raise DeviceError(f"/dev/nbd{wanted} is in use", fix="name a free device or use any")
        return wanted
    for index in have:
        if is_free(sysfs, index):
            return index
    raise DeviceError(f"all {len(have)} NBD devices are in use", fix="load nbd with a larger nbds_max")


def node(dev: Path, sysfs: Path, index: int) -> Path:
    """/dev/nbdN, made from sysfs's ``dev`` numbers when devtmpfs has not made it."""
    path = dev / f"nbd{index}"
    if not path.exists():
        numbers = _read(sysfs / "block" / f"nbd{index}" / "dev")
        if numbers is None:
            raise DeviceError(f"{path} is missing and sysfs does not say its numbers")
        major, _, minor = numbers.partition(":")
        os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(int(major), int(minor)))
    return path


Ioctl_ = Callable[[int, int, int], object]


def _ioctl(fd: int, request: int, arg: int) -> object:
    return fcntl.ioctl(fd, request, arg)


@dataclass
class Attached:
    """A device that NBD_DO_IT serves in a thread."""

    index: int
    path: Path
    fd: int
    done: threading.Event = field(default_factory=threading.Event)
    error: OSError | None = None  # what NBD_DO_IT ended with, if it failed

    @property
    def name(self) -> str:
        return f"nbd{self.index}"


def _do_it(attached: Attached, ioctl: Ioctl_, log: Callable[[str], None]) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        ioctl(attached.fd, Ioctl.DO_IT, 0)
    except OSError as exc:
        attached.error = exc
        log(f"NBD_DO_IT on {attached.path} ended: {exc.strerror or exc}")
    else:
        log(f"NBD_DO_IT on {attached.path} ended")
    finally:
        for request in (Ioctl.CLEAR_QUE, Ioctl.CLEAR_SOCK):
            with contextlib.suppress(OSError):
                ioctl(attached.fd, request, 0)
        attached.done.set()


def attach(
    index: int,
    sock_fd: int,
    geometry: Geometry,
    *,
    log: Callable[[str], None],
    dev: Path = Path("/dev"),
    sysfs: Path = Path("/sys"),
    ioctl: Ioctl_ = _ioctl,
) -> Attached:
    """Give ``sock_fd`` to /dev/nbd``index`` and start NBD_DO_IT in a thread that blocks signals."""
    path = node(dev, sysfs, index)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        for request, arg in (
            (Ioctl.SET_BLKSIZE, geometry.block_size),
            (Ioctl.SET_SIZE_BLOCKS, geometry.blocks),
            (Ioctl.SET_FLAGS, int(geometry.flags)),
            (Ioctl.SET_SOCK, sock_fd),
        ):
            try:
                ioctl(fd, request, arg)
            except OSError as exc:
                raise DeviceError(
                    f"{path}: the kernel refused {request.name} ({exc.strerror or exc})"
                ) from None
    except BaseException:
        os.close(fd)
        raise
    attached = Attached(index, path, fd)
    threading.stack_size(THREAD_STACK)
    threading.Thread(target=_do_it, args=(attached, ioctl, log), name="nbd-do-it", daemon=True).start()
    return attached


def disconnect(attached: Attached, *, ioctl: Ioctl_ = _ioctl) -> None:
    """Ask the kernel to end the device: it sends NBD_CMD_DISC after the requests it holds."""
    ioctl(attached.fd, Ioctl.DISCONNECT, 0)


def has_partition_table(first_sector: bytes) -> bool:
    """An MBR or a protective MBR (GPT) ends sector 0 with 0x55 0xAA."""
    return len(first_sector) >= 512 and first_sector[510:512] == b"\x55\xaa"


def partitions(sysfs: Path, index: int) -> tuple[str, ...]:
    base = sysfs / "block" / f"nbd{index}"
    prefix = f"nbd{index}p"
    with contextlib.suppress(OSError):
        return tuple(sorted((p.name for p in base.iterdir() if p.name.startswith(prefix)), key=_number))
    return ()


def _number(name: str) -> int:
    tail = name.rpartition("p")[2]
    return int(tail) if tail.isdigit() else 0


def settle(
    attached: Attached,
    geometry: Geometry,
    *,
    expect_table: bool,
    log: Callable[[str], None],
    sysfs: Path = Path("/sys"),
    timeout: float = 10.0,
    ioctl: Ioctl_ = _ioctl,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, ...]:
    """Wait until the kernel shows the device's size, then its partitions (BLKRRPART when they
    do not appear by themselves); the partitions' names.  Runs beside the server: the kernel
    reads the partition table through it."""
    base = sysfs / "block" / attached.name
    until = time.monotonic() + timeout
    while _read(base / "size") in ("0", None):
        if attached.done.is_set() or time.monotonic() >= until:
            raise DeviceError(f"{attached.path} did not come up (its size stayed 0)")
        sleep(0.02)
    with contextlib.suppress(OSError):
        (base / "queue" / "max_sectors_kb").write_text(str(MAX_SECTORS_KB))
    # The first open after NBD_DO_IT started scans the partition table on current kernels.
    with contextlib.suppress(OSError):
        os.close(os.open(attached.path, os.O_RDONLY | os.O_CLOEXEC))
    if not expect_table:
        return partitions(sysfs, attached.index)
    soon = time.monotonic() + 1.0
    while not partitions(sysfs, attached.index) and time.monotonic() < soon:
        sleep(0.02)
    found = partitions(sysfs, attached.index)
    if not found:
        log(f"{attached.path}: no partitions yet; asking the kernel to read the table (BLKRRPART)")
        fd = os.open(attached.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ioctl(fd, BLKRRPART, 0)
        except OSError as exc:
            log(f"{attached.path}: BLKRRPART refused: {exc.strerror or exc} (is nbd loaded with max_part=0?)")
        finally:
            os.close(fd)
        found = partitions(sysfs, attached.index)
    return found
