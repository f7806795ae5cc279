"""A byte reader over one LUN, with a small block cache (what the disk probes read through)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iscsiboot.iscsi import scsi

if TYPE_CHECKING:
    from iscsiboot.iscsi.session import Session


class LunReader:
    """A :data:`~iscsiboot.disk.probe.ReadAt` over one LUN, with a small block cache."""

    CHUNK = 64 * 1024

    def __init__(self, session: Session, lun: int, capacity: scsi.Capacity, *, base: int = 0) -> None:
        self.session = session
        self.lun = lun
        self.capacity = capacity
        self.base = base
        self._cache: dict[int, bytes] = {}

    def _chunk(self, index: int) -> bytes:
        if index not in self._cache:
            bs = self.capacity.block_size
            lba = index * self.CHUNK // bs
            blocks = min(self.CHUNK // bs, self.capacity.blocks - lba)
            if blocks <= 0:
                return b""
            if len(self._cache) > 512:
                self._cache.clear()
            self._cache[index] = self.session.read(self.lun, lba, blocks, block_size=bs)
        return self._cache[index]

    def __call__(self, offset: int, length: int) -> bytes:
        offset += self.base
        out = bytearray()
        while length > 0:
            index, within = divmod(offset, self.CHUNK)
            chunk = self._chunk(index)[within : within + length]
            if not chunk:
                break
            out += chunk
            offset += len(chunk)
            length -= len(chunk)
        return bytes(out)

    def at(self, base: int) -> LunReader:
        """The same LUN seen from byte ``base`` (a partition); shares the cache."""
        view = LunReader(self.session, self.lun, self.capacity, base=self.base + base)
        view._cache = self._cache
        return view
