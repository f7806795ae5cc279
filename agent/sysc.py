# ruff: noqa: SIM105  (no contextlib: PID 1 imports this module before its first fork)
"""The system calls a PID 1 needs that Python's os module lacks, through ctypes.

mount(2), umount2(2), finit_module(2), reboot(2), loop device set-up by ioctl,
and switch_root (move the new root over /, chroot, exec).  Each raises
:class:`OSError` with the errno, like the os module does.

PID 1 mounts /proc and /sys with it first thing: it imports nothing heavier than ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import struct

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_NOATIME = 1024
MS_MOVE = 8192
MNT_DETACH = 2

RB_AUTOBOOT = 0x01234567
RB_POWER_OFF = 0x4321FEDC

SYS_FINIT_MODULE = {"x86_64": 313, "aarch64": 273, "i686": 350, "i386": 350, "armv7l": 379, "riscv64": 273}

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4

_FLAG_WORDS = {
    "ro": MS_RDONLY,
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
}

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    return _libc


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def split_options(options: str) -> tuple[int, str]:
    """mount(8)-style options to (flags, data): ``ro,noatime,errors=remount-ro``."""
    flags = 0
    data: list[str] = []
    for word in filter(None, options.split(",")):
        if word in _FLAG_WORDS:
            flags |= _FLAG_WORDS[word]
        elif word == "rw":
            flags &= ~MS_RDONLY
        else:
            data.append(word)
    return flags, ",".join(data)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str = "") -> None:
    fn = libc().mount
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    _check(
        fn(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() or None,
        ),
        f"mount {source} on {target}",
        target,
    )


def umount(target: str, flags: int = 0) -> None:
    fn = libc().umount2
    fn.argtypes = [ctypes.c_char_p, ctypes.c_int]
    _check(fn(target.encode(), flags), f"unmount {target}", target)


MODULE_INIT_COMPRESSED_FILE = 4


def finit_module(path: str, params: str = "") -> None:
    """Load a kernel module file; EEXIST (already loaded) counts as success.

    Compressed modules (``.ko.xz``, ``.ko.zst``, ``.ko.gz``) are handed to the
    kernel to decompress (Linux 6.x with CONFIG_MODULE_DECOMPRESS).
    """
    flags = MODULE_INIT_COMPRESSED_FILE if not path.endswith(".ko") else 0
    number = SYS_FINIT_MODULE.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"finit_module: unknown system call number on {os.uname().machine}")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fn = libc().syscall
        fn.restype = ctypes.c_long
        result = fn(
            ctypes.c_long(number), ctypes.c_int(fd), ctypes.c_char_p(params.encode()), ctypes.c_int(flags)
        )
        if result < 0:
            err = ctypes.get_errno()
            if err != errno.EEXIST:
                raise OSError(err, f"finit_module: {os.strerror(err)}", path)
    finally:
        os.close(fd)


def reboot(command: int) -> None:
    os.sync()
    fn = libc().reboot
    fn.argtypes = [ctypes.c_int]
    _check(fn(command), "reboot")


def ensure_node(path: str, sysfs_dev_file: str) -> None:
    """Create the block device node ``path`` from sysfs's ``MAJOR:MINOR`` when devtmpfs has not."""
    if os.path.exists(path):
        return
    with open(sysfs_dev_file) as handle:
        major, minor = (int(x) for x in handle.read().strip().split(":"))
    os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(major, minor))


def loop_attach(path: str, *, read_only: bool = True, dev_dir: str = "/dev") -> tuple[str, int]:
    """Attach ``path`` to a free loop device; return the device and an open descriptor of it.

    The device is set to clear itself on its last close: mount it, then close
    the descriptor, and unmounting frees the loop device (as mount -o loop).
    """
    ctl = os.open(f"{dev_dir}/loop-control", os.O_RDWR | os.O_CLOEXEC)
    mode = os.O_RDONLY if read_only else os.O_RDWR
    try:
        for _attempt in range(8):
            number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            device = f"{dev_dir}/loop{number}"
            if not os.path.exists(device):
                os.mknod(device, 0o600 | stat.S_IFBLK, os.makedev(7, number))
            backing = os.open(path, mode | os.O_CLOEXEC)
            loop = os.open(device, mode | os.O_CLOEXEC)
            try:
                try:
                    fcntl.ioctl(loop, LOOP_SET_FD, backing)
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        os.close(loop)
                        continue  # taken by someone else meanwhile
                    raise
                flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
                name = os.path.basename(path).encode()[:63]
                info = struct.pack("=5Q4I64s64s32s2Q", 0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0)
                try:
                    fcntl.ioctl(loop, LOOP_SET_STATUS64, info)
                except OSError:
                    fcntl.ioctl(loop, LOOP_CLR_FD, 0)
                    raise
                return device, loop
            except BaseException:
                os.close(loop)
                raise
            finally:
                os.close(backing)
        raise OSError(errno.EBUSY, "no free loop device")
    finally:
        os.close(ctl)


def switch_root(new_root: str, init: str, argv: list[str] | None = None) -> None:
    """Make ``new_root`` the root and exec ``init`` there (never returns on success).

    Frees the initramfs first: every file of the old root on its own file
    system is removed (other mounts are skipped), as switch_root(8) does.
    """
    root_dev = os.stat("/").st_dev
    if os.stat(new_root).st_dev == root_dev:
        raise OSError(errno.EINVAL, f"{new_root} is not a mount point")
    _remove_tree("/", root_dev, skip=os.path.realpath(new_root))
    os.chdir(new_root)
    mount(new_root, "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    os.execv(init, argv or [init])


def _remove_tree(path: str, device: int, skip: str) -> None:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        full = entry.path
        if full == skip:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            if info.st_dev != device:
                continue  # another file system (/dev, /proc, the new root)
            _remove_tree(full, device, skip)
            try:
                os.rmdir(full)
            except OSError:
                pass
        else:
            try:
                os.unlink(full)
            except OSError:
                pass
