"""Console output shared by every subcommand: terminal-safe text, JSON, warnings, atomic files."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from iscsiboot.errors import UsageError

PROG = "iscsiboot"


def printable(text: str, keep: str = "") -> str:
    """``text`` safe for a terminal: every character that is not printable written as an escape.

    Control characters (escape sequences, carriage returns, newlines),
    line and paragraph separators, format characters (bidirectional
    overrides) and unassigned code points become ``\\xNN``, ``\\uNNNN`` or
    ``\\UNNNNNNNN``; a byte that was not UTF-8 (decoded with
    ``surrogateescape``) becomes ``\\xNN`` of that byte.  ``keep`` names
    characters written as they are (the newlines of a multi-line text).
    Names read from a target, an iBFT or a command line pass through here
    before they reach the terminal, so none of them can move the cursor, add
    a line or fail to encode.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte that did not decode
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def write_text(text: str) -> None:
    """Text output on standard output, lines and tabs kept, every other control escaped."""
    sys.stdout.write(printable(text, keep="\n\t"))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"{PROG}: warning: {printable(message)}\n")


def info(message: str) -> None:
    sys.stderr.write(f"{PROG}: {printable(message)}\n")


_KINDS = (
    (stat.S_ISLNK, "a symbolic link", errno.ELOOP),
    (stat.S_ISDIR, "a folder", errno.EISDIR),
    (stat.S_ISCHR, "a character device", errno.EEXIST),
    (stat.S_ISBLK, "a block device", errno.EEXIST),
    (stat.S_ISFIFO, "a FIFO", errno.EEXIST),
    (stat.S_ISSOCK, "a socket", errno.EEXIST),
)


def refuse_non_regular(path: str | os.PathLike[str]) -> None:
    """Raise OSError unless ``path`` is absent or a regular file (a symbolic link is refused too).

    A file written over ``path`` would replace the device node, FIFO, socket
    or link itself (as root, ``/dev/null`` with a regular file), so only a
    regular file is ever replaced; a link is not followed, so a planted link
    cannot redirect the write.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    for test, kind, code in _KINDS:
        if test(mode):
            raise OSError(code, f"it is {kind}, and only a regular file is replaced", os.fspath(path))


TEMP_TRIES = 100
_T = TypeVar("_T")
_serial = itertools.count(1)


def _fresh_names(folder: str, prefix: str) -> Iterator[str]:
    """Names in ``folder`` that no other writer picks: this process's ID, a clock and a count.

    The callers create each name with ``O_EXCL`` (or ``mkdir``), so a name that is
    taken only costs a retry.  This is ``tempfile``'s job; the boot agent does it here
    because ``tempfile`` brings ``shutil``, ``random`` and the compressors into PID 1.
    """
    for _ in range(TEMP_TRIES):
        stamp = time.monotonic_ns() % 1_000_000_007
        yield os.path.join(folder, f"{prefix}{os.getpid()}.{stamp:x}.{next(_serial)}")


def new_file(folder: str, prefix: str) -> tuple[int, str]:
    """A new, empty file (mode 0600) in ``folder``: its descriptor and path (as ``tempfile.mkstemp``)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return _first_free(folder, prefix, lambda name: (os.open(name, flags, 0o600), name), "file")


def new_folder(folder: str, prefix: str) -> str:
    """A new, empty folder (mode 0700) in ``folder`` (as ``tempfile.mkdtemp``)."""

    def make(name: str) -> str:
        os.mkdir(name, 0o700)
        return name

    return _first_free(folder, prefix, make, "folder")


def _first_free(folder: str, prefix: str, create: Callable[[str], _T], what: str) -> _T:
    """``create`` of the first of :func:`_fresh_names` that is not taken (it raises FileExistsError)."""
    for name in _fresh_names(folder, prefix):
        try:
            return create(name)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free name for a temporary {what}", folder)


def write_atomic(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    ``path`` must be absent or a regular file (see :func:`refuse_non_regular`).
    The data goes to a temporary file in the same directory, is flushed to
    disk, then renamed over ``path``; on any error the temporary file is
    removed and ``path`` is untouched.
    """
    target = Path(path)
    refuse_non_regular(target)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = new_file(os.fspath(target.parent) or ".", f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        refuse_non_regular(target)  # something else may have appeared there meanwhile
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output(path: str | os.PathLike[str], option: str = "--output") -> None:
    """UsageError unless ``path`` may be written by :func:`write_atomic` (checked before the work)."""
    try:
        refuse_non_regular(path)
    except OSError as exc:
        raise _output_error(path, exc, option) from None


def write_output(
    path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644, option: str = "--output"
) -> None:
    """:func:`write_atomic` for a file the user named: a failure is one UsageError naming the option."""
    try:
        write_atomic(path, data, mode)
    except OSError as exc:
        raise _output_error(path, exc, option) from None


def _output_error(path: str | os.PathLike[str], exc: OSError, option: str) -> UsageError:
    fixes = {errno.ELOOP: "give the path the link points to", errno.EISDIR: "name a file in it"}
    return UsageError(
        f"cannot write {os.fspath(path)!r}: {exc.strerror}",
        where=option,
        fix=fixes.get(exc.errno or 0, "name a regular file or a new one in an existing folder"),
    )
