"""Which kernel module files an image needs, from depmod's index (pure apart from :func:`load_index`).

The index is read by :mod:`iscsiboot.agent.kmod`, the same reader the agent uses at
boot (:func:`load_index` reads the text files ``depmod`` writes); :func:`resolve`
gives the closure of the wanted modules (dependencies and soft
dependencies) in load order.  ``iscsi_tcp`` needs the ``crc32c`` crypto
algorithm when a connection is made, which modules.dep does not say: every
module that provides ``crypto-crc32c`` (found through modules.alias) is added
whenever ``iscsi_tcp`` is wanted.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.agent.kmod import ModuleIndex, module_name, parse_index
from iscsiboot.errors import UsageError

__all__ = ["ModuleIndex", "module_name", "parse_index"]  # the index is the agent's: one reader for both

# What the boot path needs, by transport: file systems, loop and VLANs for every image; kernel
# iSCSI (and the iBFT, and disks) for ``kernel``; the kernel's NBD client for ``nbd`` (a module
# on Debian's kernel, built in on LibreELEC's); ``auto`` carries both and the agent picks at boot.
# A FAT System (LibreELEC's own layout) needs vfat and the code pages its mount asks for:
# cp437 for the short names and the kernel's default I/O character set (ascii on Debian,
# iso8859-1 upstream, utf8 with utf8=1).
FAT_MODULES: tuple[str, ...] = ("vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8")
COMMON_MODULES: tuple[str, ...] = ("ext4", "squashfs", "loop", "8021q", *FAT_MODULES)
ISCSI_MODULES: tuple[str, ...] = ("iscsi_tcp", "iscsi_ibft", "sd_mod")
NBD_MODULES: tuple[str, ...] = ("nbd",)
PATH_MODULES: tuple[str, ...] = ISCSI_MODULES + COMMON_MODULES
TRANSPORTS: tuple[str, ...] = ("auto", "kernel", "nbd")
# NIC drivers are the hardware's business.  The full image stands alone and carries the
# virtual machines' NICs (QEMU's virtio and its default e1000, also VirtualBox's and
# VMware's); an overlay carries none by default: the distribution initramfs it is
# appended to brings the drivers of its hardware (the agent reads the base's module
# index too), or its kernel has them built in.  ``--module`` adds any.
VM_NIC_MODULES: tuple[str, ...] = ("virtio_net", "virtio_pci", "e1000")
DEFAULT_MODULES: tuple[str, ...] = PATH_MODULES + VM_NIC_MODULES  # the full image's, for kernel iSCSI


def default_modules(*, overlay: bool, transport: str = "kernel") -> tuple[str, ...]:
    """The modules an image for ``transport`` (auto, kernel or nbd) asks for."""
    path = {
        "kernel": PATH_MODULES,
        "auto": ISCSI_MODULES + NBD_MODULES + COMMON_MODULES,
        "nbd": NBD_MODULES + COMMON_MODULES,
    }[transport]
    return path if overlay else path + VM_NIC_MODULES


CRC32C_ALIAS = "crypto-crc32c"


def load_index(modules_dir: Path) -> ModuleIndex:
    """Read the index of ``lib/modules/<ver>`` (after ``depmod``)."""
    dep_file = modules_dir / "modules.dep"
    if not dep_file.is_file():
        raise UsageError(
            f"{dep_file} does not exist", where="--modules-root", fix=f"run depmod -b ROOT {modules_dir.name}"
        )

    def text(name: str) -> str:
        path = modules_dir / name
        return path.read_text(errors="replace") if path.is_file() else ""

    return parse_index(
        text("modules.dep"), text("modules.alias"), text("modules.builtin"), text("modules.softdep")
    )


@dataclass(frozen=True)
class Closure:
    """The module files to ship, dependencies first, and what is built in already."""

    paths: tuple[str, ...]  # relative to lib/modules/<ver>, in load order
    names: tuple[str, ...]  # the same modules, by name
    builtin: tuple[str, ...]  # wanted names the kernel has built in
    crc32c: tuple[str, ...]  # the crc32c providers included (empty if built in)


def lookup(index: ModuleIndex, name: str) -> tuple[str, ...]:
    """The module names that satisfy ``name`` (a module name or an alias); () if built in."""
    norm = name.replace("-", "_")
    if norm in index.paths:
        return (norm,)
    if norm in index.builtin:
        return ()
    providers = [mod for pattern, mod in index.aliases if fnmatch.fnmatchcase(name, pattern)]
    if not providers and norm != name:
        providers = [mod for pattern, mod in index.aliases if fnmatch.fnmatchcase(norm, pattern)]
    modules = sorted({p for p in providers if p in index.paths})
    if modules:
        return tuple(modules)
    if any(p in index.builtin for p in providers):
        return ()
    raise UsageError(
        f"the kernel has no module {name!r}",
        where="--module",
        fix="check the name with modinfo, or drop it if the kernel has it built in",
    )


def resolve(index: ModuleIndex, wanted: Iterable[str], *, crc32c: bool | None = None) -> Closure:
    """The closure of ``wanted`` (names or aliases) with dependencies before dependants.

    ``crc32c`` adds the providers of ``crypto-crc32c``; by default it is on
    when ``iscsi_tcp`` is wanted.
    """
    order: list[str] = []
    builtin: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in visiting:
            return
        visiting.add(name)
        for soft in index.softdeps.get(name, ()):
            try:
                for provider in lookup(index, soft):
                    visit(provider)
            except UsageError:
                pass  # a soft dependency the kernel lacks is not fatal
        for dep in index.depends(name):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    names = list(wanted)
    for name in names:
        providers = lookup(index, name)
        if not providers:
            builtin.append(name)
        for provider in providers:
            visit(provider)
    use_crc = ("iscsi_tcp" in order) if crc32c is None else crc32c
    crc_mods: tuple[str, ...] = ()
    if use_crc:
        crc_mods = lookup(index, CRC32C_ALIAS)
        for provider in crc_mods:
            visit(provider)
    return Closure(
        paths=tuple(index.paths[n] for n in order),
        names=tuple(order),
        builtin=tuple(builtin),
        crc32c=crc_mods,
    )
