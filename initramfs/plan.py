"""What goes into the image: a list of (archive path, source or content, mode), decided purely.

:func:`make_plan` turns the facts the builder discovered (traced Python
files, library closure, module closure, busybox applets) and the options into
:class:`Item`\\ s.  Nothing here reads or writes files; :mod:`.build` executes a
plan.  Two variants:

* ``full``: a complete initramfs with a usrmerge layout (``bin``, ``sbin``,
  ``lib``, ``lib64`` are symlinks into ``usr/``), busybox with its applets,
  ``/init`` starting the agent, modules in ``/usr/lib/modules/<ver>``.
* ``overlay``: meant to be appended to a distribution's initramfs.  No
  busybox, no top-level symlinks (the base's own ``/bin`` etc. stay), no
  ``/init`` unless ``replace_init``; the agent starts from ``/init.iscsiboot``.
  The module files go to ``/lib/modules/<ver>`` through whatever ``/lib`` the
  base has; their index (modules.dep, .alias, .builtin) goes to
  :data:`OVERLAY_INDEX` so that the base's own index, which its udev and
  modprobe need, stays as it was.  The agent looks a module up in the
  overlay's index first and in the base's when that has no answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from iscsiboot.agent import kmod
from iscsiboot.agent.phases import modules as agent_modules
from iscsiboot.agent.startup import codecache
from iscsiboot.initramfs.cpio import Kind

MULTIARCH = "usr/lib/x86_64-linux-gnu"
LOADER = "ld-linux-x86-64.so.2"
MANIFEST = "etc/iscsiboot/initramfs.json"


class Variant(Enum):
    FULL = "full"
    OVERLAY = "overlay"


@dataclass(frozen=True)
class Item:
    """One archive member: from a host file (``source``) or given ``content``."""

    path: str
    kind: Kind
    mode: int
    group: str
    source: Path | None = None
    content: bytes = b""
    compile_pyc: bool = False  # source is Python text to compile to a sourceless .pyc
    rdev: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class PlanInputs:
    """Everything the plan depends on (discovered by the builder)."""

    kernel_version: str
    python: Path  # the interpreter binary
    python_files: Sequence[tuple[str, Path, bool]]  # (archive path, source, compile): modules, data
    libraries: Sequence[tuple[str, Path]]  # (soname, host file)
    modules: Sequence[tuple[str, Path]]  # (path relative to the modules dir, host file)
    module_index: Sequence[tuple[str, Path]]  # depmod outputs (modules.dep, ...): (name, host file)
    load_order: Sequence[str]
    crc32c: Sequence[str]
    busybox: Path | None = None
    applets: Sequence[str] = ()  # "usr/bin/sh", "sbin/ifconfig", ... (busybox --list-full)
    e2fsck: Path | None = None
    iscsistart: Path | None = None
    variant: Variant = Variant.FULL
    replace_init: bool = False
    extra: dict[str, str] = field(default_factory=dict)  # manifest extras (versions)
    codecache: bytes = b""  # dataclasses' generated code, compiled (iscsiboot.agent.startup.codecache)


# Where the agent looks (image paths, without the leading slash).
CODECACHE = codecache.PATH.lstrip("/")
OVERLAY_INDEX = agent_modules.OVERLAY_INDEX.lstrip("/")
OVERLAY_INDEX_FILES = kmod.TEXT_INDEX  # the overlay's index is text: what the agent reads without the tries


def modules_dir(variant: Variant, version: str) -> str:
    """Where the module files (and, in the full image, depmod's index) live inside the image."""
    if variant is Variant.OVERLAY:
        return f"lib/modules/{version}"  # through the base's own /lib (a folder or a symlink)
    return f"usr/lib/modules/{version}"


def init_script() -> bytes:
    """``/init``: the interpreter without site, straight into the agent."""
    return (
        b"#!/usr/bin/python3.11 -S\n"
        b'"""iscsiboot initramfs entry point: hand over to the boot agent."""\n'
        b"import sys\n"
        b"if '/usr/lib/python3.11' not in sys.path:\n"
        b"    sys.path.insert(0, '/usr/lib/python3.11')\n"
        b"from iscsiboot.agent.init import main\n"
        b"sys.exit(main())\n"
    )


def cli_script() -> bytes:
    """``iscsiboot``: the console script inside the image (hook mode: ``iscsiboot agent run --hook F``)."""
    return b"#!/usr/bin/python3.11 -S\nimport sys\nfrom iscsiboot.cli import main\nsys.exit(main())\n"


HOOK_README = b"""iscsiboot overlay
=================

This archive was appended to a distribution initramfs
(cat base-initramfs overlay > initramfs).  It added:

  /init.iscsiboot          the agent as PID 1 (boot with rdinit=/init.iscsiboot)
  /iscsiboot/bin/iscsiboot the command line (hook mode below)
  /lib/modules/VER         kernel modules for the iSCSI path (the base's index
                           there is left alone: modprobe does not know them)
  /usr/lib/iscsiboot/modules/VER  their index, which the agent reads first
                           (then the base's: NIC drivers come from the base
                           unless the overlay was built with --module NAME)
  /usr/bin/python3.11, /usr/lib/python3.11, /usr/lib/x86_64-linux-gnu: the runtime
  /usr/sbin/iscsistart, /usr/sbin/e2fsck (when built with --backend iscsistart, --fsck)
  /etc/iscsiboot/initramfs.json: what was built (kernel, modules, paths)

Hook mode: the base's own /init stays PID 1.  With /proc, /sys and /dev
mounted, it asks the agent for the network, the iSCSI login and the System
and Storage devices, then mounts and switches root itself:

    /iscsiboot/bin/iscsiboot agent run --hook /run/iscsiboot.env
    . /run/iscsiboot.env
    if [ "$ISCSIBOOT_OK" != 1 ]; then
        echo "iscsiboot: $ISCSIBOOT_PHASE: $ISCSIBOOT_ERROR ($ISCSIBOOT_FIX)"; exec sh
    fi
    mount -o ro "$ISCSIBOOT_SYSTEM" /sysroot      # the System partition
    exec switch_root /sysroot /sbin/init

The file holds KEY='value' lines: ISCSIBOOT_OK, _PHASE, _ERROR, _FIX,
_SYSTEM, _STORAGE, _IFACE, _ADDRESS, _PREFIX, _GATEWAY, _DNS, _SESSIONS.

Or let the agent do everything: build with --replace-init, or boot with
rdinit=/init.iscsiboot.
"""


def _file(path: str, group: str, source: Path, mode: int = 0o644) -> Item:
    return Item(path, Kind.FILE, mode, group, source=source)


def _content(path: str, group: str, data: bytes, mode: int = 0o644) -> Item:
    return Item(path, Kind.FILE, mode, group, content=data)


def _link(path: str, target: str, group: str = "layout") -> Item:
    return Item(path, Kind.SYMLINK, 0o777, group, content=target.encode())


def _dir(path: str, mode: int = 0o755) -> Item:
    return Item(path, Kind.DIR, mode, "layout")


def _group_of_python(archive: str) -> str:
    rel = archive.split("python3.11/", 1)[-1]
    top = rel.split("/", 1)[0]
    if top == "lib-dynload":
        return "python extensions"
    if top in ("iscsiboot", "pyroute2", "construct"):
        return top
    return "python stdlib"


def normalize_applet(path: str) -> str:
    """busybox's ``bin/sh`` / ``usr/sbin/x`` -> the usrmerge location ``usr/bin/sh``, ``usr/sbin/x``."""
    parts = path.strip("/").split("/")
    name = parts[-1]
    sbin = "sbin" in parts[:-1]
    return f"usr/{'sbin' if sbin else 'bin'}/{name}"


def make_plan(inp: PlanInputs) -> list[Item]:
    """The items of the image, unsorted (the cpio writer sorts)."""
    overlay = inp.variant is Variant.OVERLAY
    items: list[Item] = []
    # layout
    for d in ("dev", "proc", "sys", "run", "root", "etc", "usr/bin", "usr/sbin", "usr/lib", "var"):
        items.append(_dir(d))
    items.append(_dir("tmp", 0o1777))
    items.append(Item("dev/console", Kind.CHAR, 0o600, "layout", rdev=(5, 1)))
    items.append(Item("dev/null", Kind.CHAR, 0o666, "layout", rdev=(1, 3)))
    if overlay:
        # Real lib64 folder (or the base's own symlink) holding the loader path programs ask for.
        items.append(_dir("lib64"))
        items.append(_link(f"lib64/{LOADER}", f"/{MULTIARCH}/{LOADER}"))
    else:
        for top in ("bin", "sbin", "lib", "lib64"):
            items.append(_link(top, f"usr/{top}"))
        items.append(_link(f"usr/lib64/{LOADER}", f"../lib/x86_64-linux-gnu/{LOADER}"))
    # python
    items.append(_file("usr/bin/python3.11", "python interpreter", inp.python, 0o755))
    items.append(_link("usr/bin/python3", "python3.11"))
    for archive, source, compile_it in inp.python_files:
        items.append(
            Item(archive, Kind.FILE, 0o644, _group_of_python(archive), source=source, compile_pyc=compile_it)
        )
    if inp.codecache:
        items.append(Item(CODECACHE, Kind.FILE, 0o644, "iscsiboot", content=inp.codecache))
    # programs
    if inp.e2fsck is not None:
        items.append(_file("usr/sbin/e2fsck", "programs", inp.e2fsck, 0o755))
    if inp.iscsistart is not None:
        items.append(_file("usr/sbin/iscsistart", "programs", inp.iscsistart, 0o755))
    real = {i.path for i in items}
    if inp.busybox is not None and not overlay:
        items.append(_file("usr/bin/busybox", "busybox", inp.busybox, 0o755))
        for applet in sorted({normalize_applet(a) for a in inp.applets}):
            if applet in real or applet == "usr/bin/busybox":
                continue
            target = "busybox" if applet.startswith("usr/bin/") else "../bin/busybox"
            items.append(_link(applet, target, "busybox"))
    # shared libraries (by soname, contents of the real file)
    for soname, source in inp.libraries:
        items.append(_file(f"{MULTIARCH}/{soname}", "shared libraries", source, 0o755))
    # kernel modules
    mdir = modules_dir(inp.variant, inp.kernel_version)
    for rel, source in inp.modules:
        items.append(_file(f"{mdir}/{rel}", "kernel modules", source))
    index_dir = f"{OVERLAY_INDEX}/{inp.kernel_version}" if overlay else mdir
    for name, source in inp.module_index:
        if not overlay or name in OVERLAY_INDEX_FILES:
            items.append(_file(f"{index_dir}/{name}", "kernel modules", source))
    # entry points
    launcher = "iscsiboot/bin/iscsiboot" if overlay else "usr/bin/iscsiboot"
    items.append(_content(launcher, "entry points", cli_script(), 0o755))
    items.append(_content("init.iscsiboot" if overlay else "init", "entry points", init_script(), 0o755))
    if overlay and inp.replace_init:
        items.append(_content("init", "entry points", init_script(), 0o755))
    if overlay:
        items.append(_content("iscsiboot/README", "entry points", HOOK_README))
    manifest = {
        "variant": inp.variant.value,
        "kernel": inp.kernel_version,
        "modules_dir": "/" + mdir,
        "modules_index": "/" + index_dir,
        "load_order": list(inp.load_order),
        "crc32c": list(inp.crc32c),
        "iscsistart": "/usr/sbin/iscsistart" if inp.iscsistart is not None else None,
        "e2fsck": "/usr/sbin/e2fsck" if inp.e2fsck is not None else None,
        "cli": "/" + launcher,
        **dict(sorted(inp.extra.items())),
    }
    items.append(
        _content(MANIFEST, "entry points", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    )
    return items
