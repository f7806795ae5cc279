"""depmod's module indexes, read for the agent at boot and for the initramfs builder (pure: text or bytes in).

The text files (``modules.dep``, ``modules.alias``, ``modules.builtin``,
``modules.softdep``) are parsed whole (:func:`parse_index`); depmod's binary
tries (``modules.dep.bin``, ``modules.alias.bin``) are read in place
(:class:`Trie`, :class:`BinIndex`).  Both kinds answer the same questions
(:class:`ModuleIndex` and :class:`BinIndex`: a module's path, its
dependencies, the modules of a name or an alias); :func:`read_index` picks
the binary one where it exists.

PID 1 reads an index before anything else, and its start-up child matches the
NIC drivers' aliases, so this module stays light: plain classes instead of
dataclasses (``dataclasses`` pulls in ``inspect``, about 0.1 s in a slow
guest), no ``typing`` at run time, no ``pathlib``, and alias patterns matched
without ``re`` (:func:`glob_match`; ``fnmatch`` compiles each pattern to a
regular expression, and ``re`` itself takes a slow guest about 50 ms to import).
"""

from __future__ import annotations

import os
import struct

# kmod's binary module indexes: A distribution's text index is large (Debian 12: 26,000 aliases of 4,000
# modules); parsing it whole costs a slow guest about a second, and the agent
# asks it two or three questions.  depmod also writes each index as a trie
# (the format libkmod reads): a lookup visits only the nodes along its key,
# and the patterns that start with a wildcard where the key goes on.
#
# The format: big-endian u32 magic ``0xB007F457``, version (major 2), the
# root node's offset.  A node offset carries flags in its top nibble: a
# NUL-terminated prefix follows (``0x8...``), a child table (``0x2...``: first
# and last character, then one u32 offset per character in that range, 0 for
# none), values (``0x4...``: a u32 count, then per value a u32 priority and a
# NUL-terminated string).  Keys are the patterns (aliases) or module names;
# values are module names (aliases) or ``path: dependencies`` (modules.dep).
MAGIC = 0xB007F457
# The text index read when there are no tries (what an overlay image carries).
TEXT_INDEX = ("modules.dep", "modules.alias", "modules.builtin")
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
        if values and glob_match(key, pattern):
            out.extend(values)


# ---------------------------------------------------------------- both kinds


def glob_match(name: str, pattern: str) -> bool:
    """``fnmatch.fnmatchcase(name, pattern)``: ``*`` and ``?`` matched here, a ``[`` set by fnmatch.

    Module aliases are globs with ``*`` (``pci:v00001AF4d00001000sv*sd*bc*sc*i*``),
    rarely a ``[...]`` set.  The greedy match with one backtrack point (the last ``*``)
    decides a pattern of ``*`` and ``?`` exactly.
    """
    if "[" in pattern:
        import fnmatch  # noqa: PLC0415  (a set: fnmatch's semantics, whole)

        return fnmatch.fnmatchcase(name, pattern)
    n = p = 0
    star, mark = -1, 0
    while n < len(name):
        if p < len(pattern) and pattern[p] == "*":
            star, mark = p, n
            p += 1
        elif p < len(pattern) and (pattern[p] == "?" or pattern[p] == name[n]):
            n += 1
            p += 1
        elif star >= 0:  # give the last * one more character
            mark += 1
            n, p = mark, star + 1
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def module_name(path_or_name: str) -> str:
    """``kernel/drivers/net/virtio_net.ko.xz`` -> ``virtio_net``; dashes become underscores."""
    base = os.path.basename(path_or_name)
    for ext in (".xz", ".zst", ".gz"):
        base = base.removesuffix(ext)
    return base.removesuffix(".ko").replace("-", "_")


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first ``*``, ``?`` or ``[`` (the whole pattern if none)."""
    for i, char in enumerate(pattern):
        if char in "*?[":
            return pattern[:i]
    return pattern


class _Index:
    """What the loader asks an index: :meth:`depends` (here), ``lookup``, ``path``, ``builtin``."""

    __slots__ = ()

    builtin: frozenset[str]

    def depends(self, name: str) -> tuple[str, ...]:
        raise NotImplementedError

    def path(self, name: str) -> str | None:
        raise NotImplementedError

    def by_alias(self, wanted: str) -> list[str]:
        raise NotImplementedError

    def lookup(self, wanted: str) -> list[str]:
        """Module names for a module name or an alias (empty when unknown)."""
        name = wanted.replace("-", "_")
        if name in self.builtin or (":" not in name and self.path(name) is not None):
            return [name]
        return self.by_alias(wanted)

    def load_order(self, name: str) -> list[str]:
        """``name`` and everything it needs, dependencies first."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(module: str) -> None:
            if module in seen:
                return
            seen.add(module)
            for dep in self.depends(module):
                visit(dep)
            order.append(module)

        visit(name)
        return order


class ModuleIndex(_Index):
    """modules.dep, modules.alias, modules.builtin and modules.softdep, parsed; not changed once built."""

    __slots__ = ("aliases", "builtin", "deps", "paths", "prefixes", "softdeps")

    def __init__(
        self,
        paths: dict[str, str],  # name -> path relative to the modules directory
        deps: dict[str, tuple[str, ...]],  # name -> names it depends on
        aliases: tuple[tuple[str, str], ...],  # (pattern, name)
        builtin: frozenset[str],
        softdeps: dict[str, tuple[str, ...]] | None = None,  # name -> its pre: and post: names
    ) -> None:
        self.paths = paths
        self.deps = deps
        self.aliases = aliases
        self.builtin = builtin
        self.softdeps = softdeps or {}
        self.prefixes = tuple(literal_prefix(pattern) for pattern, _module in aliases)

    def by_alias(self, wanted: str) -> list[str]:
        """The modules of the alias patterns ``wanted`` matches.

        A pattern is matched only when ``wanted`` starts with its literal
        part: compiling every alias pattern of the image would cost PID 1 a
        tenth of a second in a slow guest, before the NIC driver loads.
        """
        found: list[str] = []
        for (pattern, module), prefix in zip(self.aliases, self.prefixes, strict=True):
            if not wanted.startswith(prefix) or module in found:
                continue
            if wanted == pattern if prefix == pattern else glob_match(wanted, pattern):
                found.append(module)
        return found

    def path(self, name: str) -> str | None:
        """The module file, relative to the modules folder."""
        return self.paths.get(name)

    def depends(self, name: str) -> tuple[str, ...]:
        return self.deps.get(name, ())


class BinIndex(_Index):
    """The same questions answered from depmod's trie files (modules.dep.bin, modules.alias.bin).

    Used where they exist: a distribution's index is read in place, not parsed
    whole (see :class:`Trie`).  ``builtin`` comes from the small text file.
    """

    __slots__ = ("aliases", "builtin", "dep", "entries")

    def __init__(self, dep: Trie, aliases: Trie, builtin: frozenset[str]) -> None:
        self.dep = dep
        self.aliases = aliases
        self.builtin = builtin
        self.entries: dict[str, tuple[str, tuple[str, ...]] | None] = {}  # name -> (path, deps)

    def _entry(self, name: str) -> tuple[str, tuple[str, ...]] | None:
        if name not in self.entries:
            line = self.dep.get(name)
            entry = None
            if line is not None:
                head, _sep, tail = line.partition(":")
                entry = (head.strip(), tuple(module_name(d) for d in tail.split()))
            self.entries[name] = entry
        return self.entries[name]

    def path(self, name: str) -> str | None:
        entry = self._entry(name)
        return None if entry is None else entry[0]

    def depends(self, name: str) -> tuple[str, ...]:
        entry = self._entry(name)
        return () if entry is None else entry[1]

    def by_alias(self, wanted: str) -> list[str]:
        return list(dict.fromkeys(value.replace("-", "_") for value in self.aliases.match(wanted)))


def parse_index(
    dep_text: str, alias_text: str = "", builtin_text: str = "", softdep_text: str = ""
) -> ModuleIndex:
    paths: dict[str, str] = {}
    deps: dict[str, tuple[str, ...]] = {}
    for line in dep_text.splitlines():
        head, sep, tail = line.partition(":")
        if not sep:
            continue
        name = module_name(head.strip())
        paths[name] = head.strip()
        deps[name] = tuple(module_name(d) for d in tail.split())
    aliases: list[tuple[str, str]] = []
    for line in alias_text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias":
            aliases.append((parts[1], parts[2].replace("-", "_")))
    return ModuleIndex(paths, deps, tuple(aliases), parse_builtin(builtin_text), parse_softdep(softdep_text))


def parse_builtin(text: str) -> frozenset[str]:
    """The module names modules.builtin lists (built into the kernel)."""
    return frozenset(module_name(line.strip()) for line in text.splitlines() if line.strip())


def parse_softdep(text: str) -> dict[str, tuple[str, ...]]:
    """Module name -> the names its ``softdep`` lines ask for (``pre:`` and ``post:`` alike)."""
    soft: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] != "softdep":
            continue
        names = tuple(w for w in words[2:] if w not in ("pre:", "post:"))
        key = words[1].replace("-", "_")
        soft[key] = soft.get(key, ()) + names
    return soft


def read_index(folder: str) -> ModuleIndex | BinIndex | None:
    """The index in ``folder``: depmod's trie files if there, else the text; None without modules.dep."""

    def read(name: str) -> str:
        try:
            with open(os.path.join(folder, name)) as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def read_bytes(name: str) -> bytes:
        with open(os.path.join(folder, name), "rb") as handle:
            return handle.read()

    try:
        dep_bin = read_bytes("modules.dep.bin")
        alias_bin = read_bytes("modules.alias.bin")
        return BinIndex(Trie(dep_bin), Trie(alias_bin), parse_builtin(read("modules.builtin")))
    except (OSError, IndexFormatError):
        pass  # no (or a foreign) binary index: the text
    dep, alias, builtin = (read(name) for name in TEXT_INDEX)
    if not dep and not os.path.exists(os.path.join(folder, "modules.dep")):
        return None
    return parse_index(dep, alias, builtin)
