"""A read-only ext2/ext3/ext4 reader over a :data:`~iscsiboot.disk.probe.ReadAt`.

Pure: it only calls the reader it is given, so ``iscsiboot doctor`` can look
into the System partition of a LUN over iSCSI reads and the tests can look
into image files.  It understands extents (any depth), classic block maps
(direct, indirect, double and triple indirect), 32- and 64-bit group
descriptors, htree directories (read as linear directories, the index is
ignored), and fast and slow symbolic links.  It does not replay the journal.
"""

from __future__ import annotations

import posixpath
import stat as statmod
from dataclasses import dataclass

from iscsiboot.disk.probe import ReadAt, le16, le32
from iscsiboot.errors import ParseError

MiB = 1 << 20
ROOT_INODE = 2
MAX_SYMLINK_HOPS = 40
MAX_EXTENT_DEPTH = 5
MAX_DIR_BYTES = 64 * MiB

EXT_MAGIC = 0xEF53
EXTENT_MAGIC = 0xF30A
INCOMPAT_COMPRESSION = 0x0001
INCOMPAT_FILETYPE = 0x0002
INCOMPAT_JOURNAL_DEV = 0x0008
INCOMPAT_META_BG = 0x0010
INCOMPAT_64BIT = 0x0080
INCOMPAT_ENCRYPT = 0x10000
INODE_FL_EXTENTS = 0x00080000
INODE_FL_INLINE_DATA = 0x10000000
INODE_FL_ENCRYPT = 0x00000800

_DIR_KINDS = {1: "file", 2: "dir", 3: "chr", 4: "blk", 5: "fifo", 6: "sock", 7: "symlink"}
_MODE_KINDS = {
    statmod.S_IFREG: "file",
    statmod.S_IFDIR: "dir",
    statmod.S_IFCHR: "chr",
    statmod.S_IFBLK: "blk",
    statmod.S_IFIFO: "fifo",
    statmod.S_IFSOCK: "sock",
    statmod.S_IFLNK: "symlink",
}


class Ext4Error(ParseError):
    """The file system is not ext2/3/4, uses a feature this reader lacks, or is corrupt."""


class Ext4NotFound(Ext4Error):
    """A path that does not exist (or runs through something that is not a directory)."""


@dataclass(frozen=True)
class DirEntry:
    name: str
    inode: int
    kind: str  # "file" | "dir" | "symlink" | "chr" | "blk" | "fifo" | "sock" | "unknown"


@dataclass(frozen=True)
class Stat:
    size: int
    mode: int  # the full i_mode, type bits included
    kind: str
    inode: int
    links: int
    mtime: int


@dataclass(frozen=True)
class _Inode:
    number: int
    mode: int
    size: int
    flags: int
    links: int
    mtime: int
    blocks: int  # i_blocks in 512-byte units (lo 32 bits)
    file_acl: int
    block: bytes  # the 60-byte i_block area

    @property
    def kind(self) -> str:
        return _MODE_KINDS.get(statmod.S_IFMT(self.mode), "unknown")


@dataclass(frozen=True)
class _Run:
    logical: int  # first logical block
    physical: int  # first physical block (0: a hole)
    count: int


class Ext4:
    """Read files and directories of the ext file system at offset 0 of ``read``."""

    def __init__(self, read: ReadAt) -> None:
        self._read_at = read
        sb = self._read(1024, 1024, "superblock")
        if le16(sb, 0x38) != EXT_MAGIC:
            raise Ext4Error("no ext2/3/4 superblock (magic 0xEF53 missing at offset 1080)")
        log = le32(sb, 0x18)
        if log > 6:
            raise Ext4Error(f"block size 2^{10 + log} is not supported")
        self.block_size = 1024 << log
        self.first_data_block = le32(sb, 0x14)
        self.blocks_per_group = le32(sb, 0x20)
        self.inodes_per_group = le32(sb, 0x28)
        self.inodes_count = le32(sb, 0x00)
        rev = le32(sb, 0x4C)
        self.inode_size = le16(sb, 0x58) if rev >= 1 else 128
        self.incompat = le32(sb, 0x60)
        blocks = le32(sb, 0x04)
        is64 = bool(self.incompat & INCOMPAT_64BIT)
        if is64:
            blocks |= le32(sb, 0x150) << 32
        self.blocks_count = blocks
        self.desc_size = (le16(sb, 0xFE) or 64) if is64 else 32
        self.filetype = bool(self.incompat & INCOMPAT_FILETYPE)
        bad = self.incompat & (INCOMPAT_COMPRESSION | INCOMPAT_JOURNAL_DEV)
        if bad:
            raise Ext4Error(f"incompatible feature flags 0x{bad:x} are not supported")
        if (
            self.blocks_per_group == 0
            or self.inodes_per_group == 0
            or self.inode_size < 128
            or self.inode_size > self.block_size
            or self.inode_size & (self.inode_size - 1)
            or self.desc_size < 32
            or self.desc_size > self.block_size
        ):
            raise Ext4Error("superblock geometry is inconsistent")
        self.group_count = -(-(blocks - self.first_data_block) // self.blocks_per_group)
        self.label = sb[0x78:0x88].split(b"\0", 1)[0].decode(errors="replace") or None

    # ------------------------------------------------------------- low level

    def _read(self, offset: int, length: int, what: str) -> bytes:
        data = self._read_at(offset, length)
        if len(data) < length:
            raise Ext4Error(f"{what} at byte {offset} lies beyond the end of the device")
        return bytes(data[:length])

    def _block(self, number: int, what: str) -> bytes:
        if not 0 < number < self.blocks_count:
            raise Ext4Error(f"{what}: block {number} is outside the file system")
        return self._read(number * self.block_size, self.block_size, what)

    def _inode_table(self, group: int) -> int:
        if self.incompat & INCOMPAT_META_BG:
            per_block = self.block_size // self.desc_size
            meta = group // per_block
            first = meta * per_block
            base = self.first_data_block + first * self.blocks_per_group
            block = base + (1 if self._has_super(first) else 0)
            offset = block * self.block_size + (group % per_block) * self.desc_size
        else:
            table = self.first_data_block + 1
            offset = table * self.block_size + group * self.desc_size
        desc = self._read(offset, self.desc_size, f"group descriptor {group}")
        lo = le32(desc, 0x08)
        hi = le32(desc, 0x28) if self.desc_size >= 64 else 0
        return lo | (hi << 32)

    def _has_super(self, group: int) -> bool:
        # sparse_super: groups 0, 1 and powers of 3, 5, 7 (meta_bg needs the answer)
        if group <= 1:
            return True
        for base in (3, 5, 7):
            n = base
            while n < group:
                n *= base
            if n == group:
                return True
        return False

    def _inode(self, number: int) -> _Inode:
        if not 1 <= number <= self.inodes_count:
            raise Ext4Error(f"inode {number} is out of range")
        group, index = divmod(number - 1, self.inodes_per_group)
        if group >= self.group_count:
            raise Ext4Error(f"inode {number} lies in a group that does not exist")
        table = self._inode_table(group)
        raw = self._read(
            table * self.block_size + index * self.inode_size, min(self.inode_size, 256), f"inode {number}"
        )
        size = le32(raw, 0x04) | (le32(raw, 0x6C) << 32)
        return _Inode(
            number=number,
            mode=le16(raw, 0x00),
            size=size,
            flags=le32(raw, 0x20),
            links=le16(raw, 0x1A),
            mtime=le32(raw, 0x10),
            blocks=le32(raw, 0x1C),
            file_acl=le32(raw, 0x68),
            block=raw[0x28:0x64],
        )

    # ------------------------------------------------------ block mapping

    def _runs(self, inode: _Inode, nblocks: int) -> list[_Run]:
        """Where the first ``nblocks`` logical blocks of ``inode`` are."""
        if inode.flags & INODE_FL_INLINE_DATA:
            raise Ext4Error(f"inode {inode.number} keeps its data inline, which is not supported")
        if inode.flags & INODE_FL_ENCRYPT:
            raise Ext4Error(f"inode {inode.number} is encrypted")
        if inode.flags & INODE_FL_EXTENTS:
            runs: list[_Run] = []
            self._extent_node(inode.block, inode.number, MAX_EXTENT_DEPTH, runs, nblocks)
            return sorted(runs, key=lambda r: r.logical)
        return self._blockmap_runs(inode, nblocks)

    def _extent_node(self, node: bytes, ino: int, budget: int, out: list[_Run], nblocks: int) -> None:
        if len(node) < 12 or le16(node, 0) != EXTENT_MAGIC:
            raise Ext4Error(f"inode {ino}: bad extent header")
        entries, depth = le16(node, 2), le16(node, 6)
        if depth > budget or 12 + 12 * entries > len(node):
            raise Ext4Error(f"inode {ino}: extent tree is corrupt")
        for i in range(entries):
            at = 12 + 12 * i
            logical = le32(node, at)
            if logical >= nblocks:
                break
            if depth == 0:
                length = le16(node, at + 4)
                initialized = length <= 32768
                if not initialized:
                    length -= 32768
                start = (le16(node, at + 6) << 32) | le32(node, at + 8)
                length = min(length, nblocks - logical)
                out.append(_Run(logical, start if initialized else 0, length))
            else:
                child = (le16(node, at + 8) << 32) | le32(node, at + 4)
                self._extent_node(
                    self._block(child, f"inode {ino} extent node"), ino, depth - 1, out, nblocks
                )

    def _blockmap_runs(self, inode: _Inode, nblocks: int) -> list[_Run]:
        pointers = [le32(inode.block, 4 * i) for i in range(15)]
        per = self.block_size // 4
        physical: list[int] = pointers[:12]

        def expand(block: int, level: int, want: int) -> list[int]:
            """``want`` block numbers under an indirect block of ``level``."""
            span = per**level
            if block == 0:
                return [0] * want
            table = self._block(block, f"inode {inode.number} indirect block")
            out: list[int] = []
            for i in range(per):
                if len(out) >= want:
                    break
                entry = le32(table, 4 * i)
                take = min(span, want - len(out))
                out.extend([entry] if level == 1 else expand(entry, level - 1, take))
            return out

        for level, pointer in ((1, pointers[12]), (2, pointers[13]), (3, pointers[14])):
            if len(physical) >= nblocks:
                break
            physical.extend(expand(pointer, level, min(per**level, nblocks - len(physical))))
        runs: list[_Run] = []
        for logical, block in enumerate(physical[:nblocks]):
            last = runs[-1] if runs else None
            if (
                last is not None
                and last.logical + last.count == logical
                and ((block == 0 and last.physical == 0) or (block and last.physical + last.count == block))
            ):
                runs[-1] = _Run(last.logical, last.physical, last.count + 1)
            else:
                runs.append(_Run(logical, block, 1))
        return runs

    def _data(self, inode: _Inode, limit: int) -> bytes:
        size = inode.size
        if size > limit:
            raise Ext4Error(f"inode {inode.number} holds {size} bytes, more than the limit of {limit}")
        bs = self.block_size
        nblocks = -(-size // bs)
        out = bytearray(nblocks * bs)
        for run in self._runs(inode, nblocks):
            if run.physical == 0 or run.count <= 0:
                continue
            if run.physical + run.count > self.blocks_count:
                raise Ext4Error(f"inode {inode.number}: extent runs past the end of the file system")
            begin = run.logical * bs
            out[begin : begin + run.count * bs] = self._read(
                run.physical * bs, run.count * bs, f"inode {inode.number} data"
            )
        return bytes(out[:size])

    # ------------------------------------------------------- directories

    def _entries(self, inode: _Inode) -> list[DirEntry]:
        if inode.kind != "dir":
            raise Ext4NotFound(f"inode {inode.number} is not a directory")
        data = self._data(inode, MAX_DIR_BYTES)
        entries: list[DirEntry] = []
        bs = self.block_size
        for base in range(0, len(data), bs):
            block = data[base : base + bs]
            pos = 0
            while pos + 8 <= len(block):
                ino, rec_len = le32(block, pos), le16(block, pos + 4)
                if self.filetype:
                    name_len, ftype = block[pos + 6], block[pos + 7]
                else:
                    name_len, ftype = le16(block, pos + 6), 0
                if rec_len < 8 or rec_len % 4 or pos + rec_len > len(block):
                    raise Ext4Error(f"directory inode {inode.number}: corrupt entry at byte {base + pos}")
                if ino and 8 + name_len <= rec_len:
                    name = block[pos + 8 : pos + 8 + name_len].decode("utf-8", errors="surrogateescape")
                    if name not in (".", ".."):
                        entries.append(DirEntry(name, ino, _DIR_KINDS.get(ftype, "unknown")))
                pos += rec_len
        return entries

    def _lookup(self, directory: _Inode, name: str) -> _Inode:
        for entry in self._entries(directory):
            if entry.name == name:
                return self._inode(entry.inode)
        raise Ext4NotFound(f"{name!r} not found")

    def _symlink_target(self, inode: _Inode) -> str:
        ea_blocks = (self.block_size // 512) if inode.file_acl else 0
        fast = (inode.size < 60 and not inode.flags & INODE_FL_EXTENTS and inode.blocks - ea_blocks == 0) or (
            inode.size < 60 and inode.blocks == 0
        )
        raw = inode.block[: inode.size] if fast else self._data(inode, 4096)
        return raw.decode("utf-8", errors="surrogateescape")

    def _resolve(self, path: str, *, follow: bool) -> _Inode:
        if not path.startswith("/"):
            path = "/" + path
        parts = [p for p in path.split("/") if p and p != "."]
        hops = 0
        current = self._inode(ROOT_INODE)
        stack: list[_Inode] = []  # parents, for ".."
        while parts:
            name = parts.pop(0)
            if name == "..":
                current = stack.pop() if stack else current
                continue
            if current.kind != "dir":
                raise Ext4NotFound(f"{path}: a component is not a directory")
            child = self._lookup(current, name)
            if child.kind == "symlink" and (parts or follow):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise Ext4Error(f"{path}: too many levels of symbolic links")
                target = self._symlink_target(child)
                if target.startswith("/"):
                    current, stack = self._inode(ROOT_INODE), []
                parts = [p for p in target.split("/") if p and p != "."] + parts
                continue
            stack.append(current)
            current = child
        return current

    # -------------------------------------------------------------- public

    def listdir(self, path: str = "/") -> tuple[DirEntry, ...]:
        """The entries of a directory, without ``.`` and ``..``, in on-disk order."""
        return tuple(self._entries(self._resolve(path, follow=True)))

    def read_file(self, path: str, *, limit: int = 16 * MiB) -> bytes:
        inode = self._resolve(path, follow=True)
        if inode.kind != "file":
            raise Ext4Error(f"{path} is a {inode.kind}, not a regular file")
        return self._data(inode, limit)

    def stat(self, path: str, *, follow: bool = True) -> Stat:
        inode = self._resolve(path, follow=follow)
        return Stat(inode.size, inode.mode, inode.kind, inode.number, inode.links, inode.mtime)

    def readlink(self, path: str) -> str:
        inode = self._resolve(path, follow=False)
        if inode.kind != "symlink":
            raise Ext4Error(f"{path} is not a symbolic link")
        return self._symlink_target(inode)

    def exists(self, path: str) -> bool:
        try:
            self._resolve(path, follow=True)
        except Ext4NotFound:
            return False
        return True

    def walk(self, path: str = "/") -> list[str]:
        """Every path below ``path``; symlinks are listed, not followed."""
        out: list[str] = []
        seen: set[int] = {self._resolve(path, follow=True).number}
        todo = [path]
        while todo:
            current = todo.pop(0)
            for entry in self.listdir(current):
                child = posixpath.join(current, entry.name)
                out.append(child)
                if entry.kind == "dir" and entry.inode not in seen:
                    seen.add(entry.inode)
                    todo.append(child)
        return out
