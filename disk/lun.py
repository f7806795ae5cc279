"""``iscsiboot install --portal``: the layout written straight onto a LUN by the project's initiator.

No root, no open-iscsi, no kernel iSCSI and no loop device on the installing
machine.  The steps:

1. Log in, read the LUN's capacity and block size, and refuse it before
   anything is written when it is too small (:func:`lunplan.check_room`) or
   already holds a partition table, a file system or any data in its first
   or last MiB, unless ``--wipe`` (:func:`lunplan.check_blank`).
2. Build the layout in a sparse temporary image of the LUN's exact size with
   :func:`iscsiboot.disk.install.install` (``libreelec``: mtools, no mount),
   its partition table and file systems in the LUN's block size (512 or
   4096 bytes: the GPT's header at LBA 1 of that size, the FAT's sectors too).
   Storage's ``mkfs.ext4`` runs with ``nodiscard``: holes in the image are not
   sent, so the file system must not count on them reading as zeroes on the
   LUN (its inode tables are then zeroed by the kernel on first mount).
3. Send the extents of the image that hold data (``SEEK_DATA``), plus both
   ends of the disk, with WRITE(16), one command per :attr:`Session.max_transfer`
   bytes; the session honours the negotiated ImmediateData, InitialR2T,
   FirstBurstLength, MaxBurstLength and MaxRecvDataSegmentLength.
4. Read every extent back and compare its SHA-256 with the one sent, then
   SYNCHRONIZE CACHE and log out.

Ctrl-C (or SIGTERM) stops between two commands: the session is logged out
and the error says the LUN is incomplete and how to write it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.disk import lunplan
from iscsiboot.disk.installreport import InstallReport, SentExtent, Transfer
from iscsiboot.disk.layout import IMAGE_SECTOR_SIZE
from iscsiboot.disk.lunplan import Extent, LunName
from iscsiboot.disk.progress import Progress
from iscsiboot.disk.target import existing_data
from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi import scsi
from iscsiboot.iscsi.login import LoginFailed
from iscsiboot.iscsi.lunreader import LunReader
from iscsiboot.iscsi.pdu import ProtocolError
from iscsiboot.iscsi.session import Session
from iscsiboot.model import Chap

EXIT_INTERRUPTED = 130
# Storage's mkfs.ext4 must not take the image's holes for zeroes on the LUN
LUN_STORAGE_OPTIONS = ("nodiscard",)


class Interrupted(IscsibootError):
    """Ctrl-C or SIGTERM while the LUN was being written: it holds part of the layout."""

    exit_code = EXIT_INTERRUPTED


@dataclass(frozen=True)
class LunAccess:
    """How to reach and log in to the LUN to write."""

    name: LunName
    initiator: str
    chap: Chap | None = None
    reverse_chap: Chap | None = None
    digests: bool = False
    timeout: float = 10.0

    def login(self) -> Session:
        try:
            return Session.login(
                self.name.host,
                self.name.port,
                initiator=self.initiator,
                target=self.name.target,
                chap=self.chap,
                reverse_chap=self.reverse_chap,
                timeout=self.timeout,
                digests=self.digests,
            )
        except LoginFailed as exc:
            raise IscsibootError(
                f"cannot log in to {self.name}: {exc.what}; nothing was written",
                fix=exc.fix or "check --username and --password-file (and the reverse ones for mutual CHAP)",
            ) from None
        except ProtocolError as exc:
            if not self.digests or "Digest" not in exc.what:
                raise
            raise IscsibootError(
                f"cannot log in to {self.name}: {exc.what}; nothing was written",
                fix="the target does not use CRC32C digests: drop --digest or turn them on at the target",
            ) from None


@dataclass(frozen=True)
class LunFacts:
    """What the first login found: the LUN's size in bytes and its block size."""

    size: int
    block_size: int


def resolve_lun(session: Session, name: LunName) -> LunName:
    """``name`` with its LUN: the one given, else the first disk the target lists (tgt: 1, LIO: 0)."""
    if name.lun is not None:
        return name
    disks = session.disk_luns()
    if not disks:
        raise IscsibootError(f"{name} lists no disk LUN; nothing was written", fix="give --lun")
    return dataclasses.replace(name, lun=disks[0])


# Builds the layout in the image of the given size (the installer's own steps); its report.  It
# runs with IMAGE_SECTOR_SIZE set to the LUN's block size, which install() plans the image for.
Build = Callable[[Path, int], InstallReport]


def install_lun(
    access: LunAccess,
    build: Build,
    *,
    wipe: bool,
    check_room: Callable[[LunName, int, int], None],
    progress: Progress | None = None,
    workdir: Path | None = None,
) -> InstallReport:
    """Check the LUN, build the layout for its size with ``build``, send it, read it back.

    ``check_room(name, size, block_size)`` refuses a LUN too small for the layout.
    """
    progress = progress if progress is not None else Progress()
    with access.login() as session:
        access = dataclasses.replace(access, name=resolve_lun(session, access.name))
        facts = _examine(session, access.name, wipe=wipe)
        check_room(access.name, facts.size, facts.block_size)
    with tempfile.TemporaryDirectory(prefix="iscsiboot-lun-", dir=workdir) as tmp:
        image = Path(tmp) / "lun.img"
        token = IMAGE_SECTOR_SIZE.set(facts.block_size)
        try:
            built = build(image, facts.size)
        finally:
            IMAGE_SECTOR_SIZE.reset(token)
        if built.sector_size != facts.block_size:
            raise IscsibootError(
                f"the layout was built for {built.sector_size}-byte sectors, and {access.name} "
                f"has {facts.block_size}-byte blocks; nothing was written"
            )
        extents = lunplan.plan_extents(data_spans(image), size=facts.size, block_size=facts.block_size)
        with access.login() as session:
            again = _examine(session, access.name, wipe=wipe)
            if again != facts:
                raise IscsibootError(f"{access.name} changed while the layout was built; nothing was written")
            transfer = _send_all(
                session, access, image, extents, block_size=facts.block_size, progress=progress
            )
    warnings = tuple(w.replace(str(image), str(access.name)) for w in built.warnings)
    return dataclasses.replace(
        built, target=str(access.name), kind="lun", created=False, warnings=warnings, transfer=transfer
    )


def _examine(session: Session, name: LunName, *, wipe: bool) -> LunFacts:
    cap = session.read_capacity(name.number)
    size = cap.blocks * cap.block_size
    if not wipe:
        lunplan.check_blank(name, _found(session, name.number, cap, size), wipe=wipe)
    return LunFacts(size, cap.block_size)


def _found(session: Session, lun: int, cap: scsi.Capacity, size: int) -> str | None:
    """What the LUN holds, in words: a known format, or any data at either end; None when blank."""
    read = LunReader(session, lun, cap)
    known = existing_data(read, size) if size else None
    if known is not None:
        return known
    for start in sorted({0, max(0, size - lunplan.EDGE)}):
        if any(read(start, min(lunplan.EDGE, size - start))):
            return f"data at byte {start} in no format iscsiboot recognises"
    return None


def data_spans(image: Path) -> Iterator[tuple[int, int]]:
    """The ``(offset, length)`` ranges of ``image`` that hold data (its holes left out)."""
    fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole from here
                    return
                raise
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            yield start, stop - start
            pos = stop
    finally:
        os.close(fd)


def _send_all(
    session: Session, access: LunAccess, image: Path, extents: tuple[Extent, ...], *, block_size: int,
    progress: Progress,
) -> Transfer:  # fmt: skip
    whole = lunplan.total(extents)
    sender = _Sender(session, access.name, block_size, bytearray(session.max_transfer), progress)
    try:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        try:
            progress.begin("writing", whole)
            sent = [sender.write(fd, extent) for extent in extents]
            write_seconds = progress.end()
            progress.begin("reading back", whole)
            for extent, digest in zip(extents, sent, strict=True):
                sender.verify(extent, digest)
            verify_seconds = progress.end()
        finally:
            os.close(fd)
        session.synchronize_cache(access.name.number)
    except KeyboardInterrupt:
        progress.stream.write("\n")
        with contextlib.suppress(IscsibootError, OSError):
            session.timeout = min(session.timeout, 3.0)
            session.logout()
        raise Interrupted(
            f"stopped: {access.name} is incomplete ({sender.written} of {whole} bytes written); "
            "it does not boot",
            fix="run the same command again with --wipe to write it anew",
        ) from None
    extents_out = tuple(SentExtent(e.offset, e.length, d) for e, d in zip(extents, sent, strict=True))
    return Transfer(block_size, extents_out, write_seconds, verify_seconds, access.digests)


@dataclass
class _Sender:
    """Writes and reads back extents through one buffer of :attr:`Session.max_transfer` bytes."""

    session: Session
    name: LunName
    block_size: int
    buf: bytearray
    progress: Progress
    written: int = 0

    def write(self, fd: int, extent: Extent) -> str:
        """Send ``extent`` of the image open as ``fd`` with WRITE(16); its SHA-256."""
        digest = hashlib.sha256()
        view = memoryview(self.buf)
        lun = self.name.number
        for piece in lunplan.chunks(extent, len(self.buf), self.block_size):
            part = view[: piece.length]
            got = os.preadv(fd, [part], piece.offset)
            if got < piece.length:  # past the end of the file: zeroes
                part[got:] = bytes(piece.length - got)
            digest.update(part)
            cdb = scsi.write16_cdb(piece.lba(self.block_size), piece.blocks(self.block_size))
            took = self.session.command_out(lun, cdb, part)
            if took != piece.length:
                raise IscsibootError(
                    f"the target took {took} of {piece.length} bytes at byte {piece.offset} of {self.name}",
                    fix="run the same command again with --wipe",
                )
            self.written += piece.length
            self.progress.advance(piece.length)
        return digest.hexdigest()

    def verify(self, extent: Extent, want: str) -> None:
        """Read ``extent`` back; IscsibootError when its SHA-256 is not ``want``."""
        digest = hashlib.sha256()
        view = memoryview(self.buf)
        for piece in lunplan.chunks(extent, len(self.buf), self.block_size):
            part = view[: piece.length]
            self.session.read_into(
                self.name.number, piece.lba(self.block_size), part, block_size=self.block_size
            )
            digest.update(part)
            self.progress.advance(piece.length)
        if digest.hexdigest() != want:
            raise IscsibootError(
                f"{self.name} reads back other data than was written "
                f"at bytes {extent.offset}-{extent.end - 1}",
                fix="check the target's backing store, then run the same command again with --wipe",
            )
