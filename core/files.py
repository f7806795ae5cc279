"""Reading the files a user names: bounded, and never waiting on a FIFO or a device.

A path on the command line may name anything: a FIFO (whose open and read
wait for a writer that never comes), ``/dev/zero`` (which never ends), a
socket, a folder.  Every reader of such a path goes through here:

* the file is opened without blocking and must be a regular file (a
  character device only where the caller reads one on purpose, such as
  ``/dev/mem``); anything else is refused with one line that says what it is;
* at most ``limit`` bytes are read; a longer file is refused (or, for a
  caller that wants only a window of it, cut at ``limit``).

OS failures (missing, unreadable) are raised as :class:`OSError` for the
caller to word, since only the caller knows what the file was for.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable

from iscsiboot.errors import UsageError

KIB = 1024
MIB = 1024 * KIB
PAGE = 4 * KIB  # the most a sysfs attribute can hold
TEXT_LIMIT = MIB  # a kernel command line, an extlinux.conf, a JSON model: far less in practice
SECRET_LIMIT = 64 * KIB  # a CHAP secret is at most a few hundred bytes
STDIN = "-"

_CHUNK = 64 * KIB

_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words (``a FIFO``, ``a regular file``)."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def size_text(n: int) -> str:
    """``n`` bytes in the largest whole binary unit (``1 MiB``, ``4 KiB``, ``100 bytes``)."""
    for unit, scale in (("MiB", MIB), ("KiB", KIB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def refuse_kind(mode: int, where: str, *, devices: bool = False) -> None:
    """UsageError unless ``mode`` is a regular file (or, with ``devices``, a character device)."""
    if stat.S_ISREG(mode) or (devices and stat.S_ISCHR(mode)):
        return
    wanted = "a regular file or a character device" if devices else "a regular file"
    raise UsageError(f"cannot read {kind_of(mode)}", where=where, fix=f"give {wanted}")


def _too_long(where: str, limit: int) -> UsageError:
    return UsageError(f"is longer than {size_text(limit)}", where=where, fix="give the right file")


def _open(path: str | os.PathLike[str], where: str, devices: bool) -> int:
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        return os.open(path, flags)
    except OSError as exc:
        # a socket cannot be opened (ENXIO) and says nothing useful about why
        try:
            mode = os.stat(path).st_mode
        except OSError:
            raise exc from None
        refuse_kind(mode, where, devices=devices)
        raise


def read_fd(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd``: fewer only at its end."""
    parts: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_bytes(
    path: str | os.PathLike[str],
    limit: int,
    *,
    where: str | None = None,
    devices: bool = False,
    truncate: bool = False,
    offset: int = 0,
) -> bytes:
    """The bytes of the regular file ``path`` (from ``offset``), at most ``limit`` of them.

    A longer file is refused, or with ``truncate`` cut at ``limit``.  ``where``
    names the file in errors (default: the path).  ``devices`` also accepts a
    character device (read without blocking: one with nothing to give fails
    rather than waits).  UsageError for a file of the wrong kind or size;
    OSError when the file cannot be opened or read.
    """
    label = where if where is not None else os.fspath(path)
    fd = _open(path, label, devices)
    try:
        st = os.fstat(fd)
        refuse_kind(st.st_mode, label, devices=devices)
        if stat.S_ISREG(st.st_mode) and not truncate and st.st_size - offset > limit:
            raise _too_long(label, limit)
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        data = read_fd(fd, limit if truncate else limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # a file that grew, or one that does not know its size (/proc)
        raise _too_long(label, limit)
    return data


def read_stdin(limit: int, *, where: str = "standard input") -> bytes:
    """Standard input to its end, refused when longer than ``limit`` bytes."""
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise _too_long(where, limit)
    return data


def decode_text(data: bytes, where: str, *, fix: str | None = None) -> str:
    """``data`` as UTF-8; UsageError naming the first byte that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"is not text: byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8",
            where=where,
            fix=fix or "give a text file",
        ) from None


def read_text(
    path: str | os.PathLike[str],
    limit: int = TEXT_LIMIT,
    *,
    where: str | None = None,
    fix: str | None = None,
    stdin: bool = False,
) -> str:
    """A UTF-8 text file of at most ``limit`` bytes (see :func:`read_bytes`).

    With ``stdin``, ``-`` reads standard input instead.
    """
    label = where if where is not None else os.fspath(path)
    if stdin and os.fspath(path) == STDIN:
        data = read_stdin(limit, where=label)
    else:
        data = read_bytes(path, limit, where=label)
    return decode_text(data, label, fix=fix)


__all__ = [
    "MIB",
    "PAGE",
    "SECRET_LIMIT",
    "STDIN",
    "TEXT_LIMIT",
    "decode_text",
    "kind_of",
    "read_bytes",
    "read_fd",
    "read_stdin",
    "read_text",
    "refuse_kind",
    "size_text",
]
