"""Shared helpers for tests that need a kernel or a built initramfs (used by the QEMU tests too).

``test_kernel()`` fetches (once, then cached) the Debian kernel; ``built_image()``
builds the initramfs into a cache folder keyed by the options and reuses it
within one test session.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from iscsiboot.initramfs import cpio, elf
from iscsiboot.initramfs.build import BuildResult, build
from iscsiboot.initramfs.kernel import KernelTree, default_cache, fetch_kernel

_built: dict[tuple[object, ...], BuildResult] = {}


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (apt-get download, depmod, chroot)")


def test_kernel(package: str = "linux-image-amd64") -> KernelTree:
    """The cached Debian kernel (downloaded on first use; needs root and the Debian archive)."""
    need_root()
    for tool in ("apt-get", "dpkg", "depmod"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            pytest.skip(f"{tool} is not installed")
    return fetch_kernel(package=package)


test_kernel.__test__ = False  # type: ignore[attr-defined]


def built_image(
    out_dir: Path, *, overlay: bool = False, compression: str = "xz", iscsistart: bool = True
) -> BuildResult:
    """Build (or reuse, within the session) an initramfs for the test kernel into ``out_dir``."""
    kernel = test_kernel()
    key = (kernel.root, overlay, compression, iscsistart)
    done = _built.get(key)
    if done is not None and done.output is not None and done.output.is_file():
        return done
    name = ("overlay" if overlay else "initramfs") + ("" if iscsistart else "-noiscsistart")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = build(
        kernel=kernel,
        output=out_dir / f"{name}.cpio.{compression}",
        overlay=overlay,
        compression=compression,
        iscsistart=iscsistart,
    )
    _built[key] = result
    return result


def unpack(archive: bytes, dest: Path) -> None:
    """Unpack an uncompressed newc archive with the real cpio."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
        input=archive,
        cwd=dest,
        check=True,
        capture_output=True,
    )


@dataclass(frozen=True)
class Node:
    """One file of an unpacked tree: its kind, permission bits and content (a link's target)."""

    kind: cpio.Kind
    mode: int
    data: bytes = b""


class KernelUnpack:
    """An in-memory root filled the way the kernel unpacks initramfs archives (init/initramfs.c).

    Archives are unpacked in order onto one root.  Every component of a member's path but
    the last is looked up following symbolic links, an absolute target from the root (so a
    member ``lib/x`` lands in ``usr/lib/x`` when ``lib -> usr/lib``).  Then, as the kernel's
    ``clean_path()``: an existing last component of another type is removed (a folder only
    when empty).  A folder member on an existing folder sets its mode; a file is
    (re)written; a symbolic link or device node on an existing one is refused.  A member
    whose parent folder does not exist is lost (the kernel creates no parents).
    """

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {"": Node(cpio.Kind.DIR, 0o755)}
        self.lost: list[str] = []
        self.mode_changes: list[str] = []

    def resolve(self, path: str, *, depth: int = 0) -> str | None:
        """``path`` with the symbolic links among its folders followed (None: a loop or a missing folder)."""
        if depth > 40:
            return None
        parts = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        for index, part in enumerate(parts[:-1]):
            if part == "..":
                if done:
                    done.pop()
                continue
            here = "/".join([*done, part])
            node = self.nodes.get(here)
            if node is None:
                return None
            if node.kind is cpio.Kind.SYMLINK:
                target = node.data.decode()
                base = "" if target.startswith("/") else "/".join(done)
                rest = "/".join(parts[index + 1 :])
                return self.resolve(f"{base}/{target}/{rest}", depth=depth + 1)
            if node.kind is not cpio.Kind.DIR:
                return None
            done.append(part)
        return "/".join([*done, parts[-1]]) if parts else ""

    def unpack(self, archive: bytes) -> None:
        for member in cpio.read_newc(archive):
            self.add(member.entry)

    def _children(self, path: str) -> bool:
        return any(p.startswith(f"{path}/") for p in self.nodes)

    def add(self, entry: cpio.Entry) -> None:
        path = self.resolve(entry.path)
        parent = path.rpartition("/")[0] if path else None
        if (
            path is None
            or parent is None
            or self.nodes.get(parent, Node(cpio.Kind.FILE, 0)).kind is not cpio.Kind.DIR
        ):
            self.lost.append(entry.path)
            return
        old = self.nodes.get(path)
        removable = old is not None and (old.kind is not cpio.Kind.DIR or not self._children(path))
        if old is not None and old.kind is not entry.kind and removable:  # clean_path()
            del self.nodes[path]
            old = None
        if entry.kind is cpio.Kind.DIR:
            if old is None:
                self.nodes[path] = Node(cpio.Kind.DIR, entry.mode)
            elif old.kind is cpio.Kind.DIR and old.mode != entry.mode:
                self.nodes[path] = Node(cpio.Kind.DIR, entry.mode)
                self.mode_changes.append(path)
        elif entry.kind is cpio.Kind.FILE:
            if old is None or old.kind is cpio.Kind.FILE:
                self.nodes[path] = Node(cpio.Kind.FILE, entry.mode, entry.data)
            else:
                self.lost.append(entry.path)
        elif old is None:  # a link or device node: refused when the path exists
            self.nodes[path] = Node(entry.kind, entry.mode, entry.data)
        else:
            self.lost.append(entry.path)

    def follow(self, path: str) -> Node | None:
        """The node ``path`` names, its last component's links followed too."""
        for _ in range(40):
            real = self.resolve(path)
            node = self.nodes.get(real) if real is not None else None
            if node is None or node.kind is not cpio.Kind.SYMLINK:
                return node
            target = node.data.decode()
            assert real is not None
            path = target if target.startswith("/") else f"{real.rpartition('/')[0]}/{target}"
        return None


# A LibreELEC-shaped base (its initramfs is usr-merged, with its own C library in /usr/lib).
LIBREELEC_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib"}
LIBREELEC_FOLDERS = ("dev", "proc", "sys", "etc", "usr", "usr/bin", "usr/sbin", "usr/lib", "usr/lib/modules")


def libreelec_base(files: dict[str, bytes], *, mode: int = 0o755, extra: Iterable[cpio.Entry] = ()) -> bytes:
    """An uncompressed newc archive shaped like LibreELEC's initramfs, holding ``files`` (path -> content).

    ``files`` should name paths as the base ships them (``usr/lib/libc.so.6``, ``init``).
    """
    entries = [cpio.Entry.directory(d) for d in LIBREELEC_FOLDERS]
    entries += [cpio.Entry.symlink(link, target) for link, target in LIBREELEC_LINKS.items()]
    entries += [cpio.Entry.file(path, data, mode) for path, data in files.items()]
    entries += list(extra)
    return cpio.write_newc(entries)


# Appended to the base's copies of the C library: an overlay that overwrote them, even with the
# same build of glibc, changes their digest (data after an ELF file's sections is never loaded).
BASE_MARK = b"\0a LibreELEC-shaped base\0"
BASE_APPLETS = ("sh", "sha256sum", "readlink", "echo", "mount")


@dataclass(frozen=True)
class ShapedBase:
    """A LibreELEC-shaped base: usr-merged, a dynamic busybox with its own C library in /usr/lib."""

    archive: bytes  # uncompressed newc
    digests: dict[str, str]  # path -> sha256 of each file it carries (what must survive an overlay)


def dynamic_busybox(cache: Path | None = None) -> Path:
    """Debian's dynamically linked busybox (package ``busybox``), fetched once with apt-get."""
    folder = (cache or default_cache()) / "packages" / "busybox"
    program = folder / "tree" / "bin" / "busybox"
    if program.is_file():
        return program
    need_root()
    download = folder / "download"
    shutil.rmtree(folder, ignore_errors=True)
    download.mkdir(parents=True)
    subprocess.run(["apt-get", "download", "-q", "busybox"], cwd=download, check=True, capture_output=True)
    (deb,) = download.glob("busybox_*.deb")
    subprocess.run(["dpkg", "-x", str(deb), str(folder / "tree")], check=True)
    return program


def libreelec_shaped(init: bytes, cache: Path | None = None) -> ShapedBase:
    """A base with ``init`` as /init, busybox at /usr/bin with its applets, glibc (marked) in /usr/lib."""
    busybox = dynamic_busybox(cache)
    _interp, libs = elf.closure([busybox])
    files = {"init": init, "usr/bin/busybox": busybox.read_bytes(), "etc/os-release": b"NAME=LibreELEC\n"}
    for lib in libs:
        files[f"usr/lib/{lib.soname}"] = lib.host_path.read_bytes() + BASE_MARK
    extra = [cpio.Entry.symlink(f"usr/bin/{a}", "busybox") for a in BASE_APPLETS]
    extra += [cpio.Entry.directory(d) for d in ("run", "tmp", "flash", "storage", "sysroot")]
    extra.append(cpio.Entry.char("dev/console", 5, 1))
    digests = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    return ShapedBase(libreelec_base(files, extra=extra), digests)


def materialize(tree: KernelUnpack, dest: Path) -> None:
    """Write an unpacked tree to ``dest`` (folders, files, links; device nodes left out)."""
    for path, node in sorted(tree.nodes.items()):
        target = dest / path if path else dest
        if node.kind is cpio.Kind.DIR:
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(node.mode)
        elif node.kind is cpio.Kind.FILE:
            target.write_bytes(node.data)
            target.chmod(node.mode)
        elif node.kind is cpio.Kind.SYMLINK:
            target.symlink_to(node.data.decode())
