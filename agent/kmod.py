"""kmod's binary module indexes (modules.dep.bin, modules.alias.bin), read in place (pure: bytes in).

A distribution's text index is large (Debian 12: 26,000 aliases of 4,000
modules); parsing it whole costs a slow guest about a second, and the agent
asks it two or three questions.  depmod also writes each index as a trie
(the format libkmod reads): a lookup visits only the nodes along its key,
and the patterns that start with a wildcard where the key goes on.

The format: big-endian u32 magic ``0xB007F457``, version (major 2), the
root node's offset.  A node offset carries flags in its top nibble: a
NUL-terminated prefix follows (``0x8...``), a child table (``0x2...``: first
and last character, then one u32 offset per character in that range, 0 for
none), values (``0x4...``: a u32 count, then per value a u32 priority and a
NUL-terminated string).  Keys are the patterns (aliases) or module names;
values are module names (aliases) or ``path: dependencies`` (modules.dep).
"""

from __future__ import annotations

import fnmatch
import struct

MAGIC = 0xB007F457
MAJOR = 2
_PREFIX, _VALUES, _CHILDREN = 0x80000000, 0x40000000, 0x20000000
_MASK = 0x0FFFFFFF
WILDCARDS = "*?["


class IndexFormatError(ValueError):
    """Not a kmod index this reader knows."""


class Trie:
    """One ``.bin`` index."""

    __slots__ = ("data", "root")

    def __init__(self, data: bytes) -> None:
        if len(data) < 12:
            raise IndexFormatError("too short for a kmod index")
        magic, version, root = struct.unpack_from(">III", data, 0)
        if magic != MAGIC or version >> 16 != MAJOR:
            raise IndexFormatError(f"magic {magic:#x}, version {version:#x}: not a kmod index")
        self.data = data
        self.root = root

    def _node(self, offset: int) -> tuple[str, int, tuple[int, ...], list[str]]:
        """(prefix, first child character, child offsets, values) of the node at ``offset``."""
        data, pos = self.data, offset & _MASK
        prefix = ""
        if offset & _PREFIX:
            end = data.index(b"\0", pos)
            prefix = data[pos:end].decode("ascii", "replace")
            pos = end + 1
        first, children = 0, ()
        if offset & _CHILDREN:
            first, last = data[pos], data[pos + 1]
            children = struct.unpack_from(f">{last - first + 1}I", data, pos + 2)
            pos += 2 + 4 * len(children)
        values: list[str] = []
        if offset & _VALUES:
            (count,) = struct.unpack_from(">I", data, pos)
            pos += 4
            for _ in range(count):
                end = data.index(b"\0", pos + 4)
                values.append(data[pos + 4 : end].decode("ascii", "replace"))
                pos = end + 1
        return prefix, first, children, values

    @staticmethod
    def _child(first: int, children: tuple[int, ...], char: str) -> int:
        index = ord(char) - first
        return children[index] if 0 <= index < len(children) else 0

    def get(self, key: str) -> str | None:
        """The first value of ``key`` exactly (modules.dep.bin: a module name)."""
        offset, i = self.root, 0
        while offset & _MASK:
            prefix, first, children, values = self._node(offset)
            if key[i : i + len(prefix)] != prefix:
                return None
            i += len(prefix)
            if i == len(key):
                return values[0] if values else None
            offset = self._child(first, children, key[i])
            i += 1
        return None

    def match(self, key: str) -> list[str]:
        """Values of every pattern that matches ``key`` (modules.alias.bin: module names).

        depmod stores the aliases with ``-`` as ``_`` (as module names), and so is ``key`` looked up.
        """
        key = key.replace("-", "_")
        out: list[str] = []
        offset, i, path = self.root, 0, ""
        while offset & _MASK:
            prefix, first, children, values = self._node(offset)
            for j, char in enumerate(prefix):
                if char in WILDCARDS:  # from here on the stored keys are patterns: try them all
                    self._every(offset, path, key, out)
                    return out
                if i + j >= len(key) or char != key[i + j]:
                    return out
            i += len(prefix)
            path += prefix
            for wild in WILDCARDS:
                child = self._child(first, children, wild)
                if child & _MASK:
                    self._every(child, path + wild, key, out)
            if i == len(key):
                out.extend(values)
                return out
            offset = self._child(first, children, key[i])
            path += key[i]
            i += 1
        return out

    def _every(self, offset: int, path: str, key: str, out: list[str]) -> None:
        """Values of the patterns under the node at ``offset`` (reached by ``path``) that match ``key``."""
        prefix, first, children, values = self._node(offset)
        pattern = path + prefix
        for index, child in enumerate(children):
            if child & _MASK:
                self._every(child, pattern + chr(first + index), key, out)
        if values and fnmatch.fnmatchcase(key, pattern):
            out.extend(values)
