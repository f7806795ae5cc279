"""What goes into the image: a list of (archive path, source or content, mode), decided purely.

:func:`make_plan` turns the facts the builder discovered (traced Python
files, library closure, module closure, busybox applets) and the options into
:class:`Item`\\ s.  Nothing here reads or writes files; :mod:`.build` executes a
plan.  Both variants keep the runtime under one private prefix
(:mod:`iscsiboot.agent.layout`: ``/usr/lib/iscsiboot``): the interpreter, the
C library and its loader, busybox (static; an overlay's only with
``--busybox``), e2fsck; the dynamic programs run through that loader, never
through the standard loader path.

* ``full``: a complete initramfs: the runtime, a usrmerge root (``bin``,
  ``sbin``, ``lib``, ``lib64`` are symlinks into ``usr/``) with busybox's
  applets, ``/init`` starting the agent, modules in ``/usr/lib/modules/<ver>``.
* ``overlay``: meant to be appended to a distribution's initramfs, which the
  kernel unpacks first (following the base's symbolic links while it unpacks
  the overlay).  It writes no path a base may have: only the prefix (with its
  kernel modules and their index, :data:`OVERLAY_INDEX`, which the agent reads
  before the base's), and ``/init`` only with ``replace_init``; the agent
  starts from ``/usr/lib/iscsiboot/init``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from iscsiboot.agent import kmod, layout
from iscsiboot.agent.phases import modules as agent_modules
from iscsiboot.agent.startup import codecache
from iscsiboot.initramfs.cpio import Kind

# The image's own runtime (image paths without the leading slash): see iscsiboot.agent.layout.
PREFIX = layout.PREFIX.lstrip("/")
BIN = layout.BIN.lstrip("/")
LIBEXEC = layout.LIBEXEC.lstrip("/")
LIB = layout.LIB.lstrip("/")
STDLIB = layout.STDLIB.lstrip("/")
LOADER = layout.LOADER_NAME
MANIFEST = f"{PREFIX}/initramfs.json"
# Folders every base an overlay is appended to has (usr-merged or not): the overlay names
# them only as parents of its own paths and never as archive members, so that unpacking it
# changes nothing the base has (a directory member would reset an existing folder's mode,
# and one named like a base's symbolic link would replace the link).
BASE_FOLDERS = frozenset({"usr", "usr/lib"})


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
    transport: str = "auto"  # kernel, nbd or auto: which transports' modules the image carries
    extra: dict[str, str] = field(default_factory=dict)  # manifest extras (versions)
    codecache: bytes = b""  # dataclasses' generated code, compiled (iscsiboot.agent.startup.codecache)


SHELL = f"{layout.BUSYBOX} sh"  # the scripts' interpreter where the image carries busybox

# Where the agent looks (image paths, without the leading slash).
CODECACHE = codecache.PATH.lstrip("/")
OVERLAY_INDEX = agent_modules.OVERLAY_INDEX.lstrip("/")
OVERLAY_INDEX_FILES = kmod.TEXT_INDEX  # the overlay's index is text: what the agent reads without the tries


def modules_dir(variant: Variant, version: str) -> str:
    """Where the module files (and their index) live inside the image.

    The full image keeps them where the kernel's tools expect them; an overlay under its
    own prefix, with the index the agent reads first (:data:`OVERLAY_INDEX`).
    """
    if variant is Variant.OVERLAY:
        return f"{OVERLAY_INDEX}/{version}"
    return f"usr/lib/modules/{version}"


def absolute_dep(text: str, folder: str) -> str:
    """``modules.dep`` with each module's path made absolute under ``/folder``.

    The agent joins a path from the index to the base's modules folder; an absolute one
    stays as it is, so the overlay's modules are found under its prefix.
    """

    def fix(path: str) -> str:
        path = path.strip()
        return path if not path or path.startswith("/") else f"/{folder}/{path}"

    lines = []
    for line in text.splitlines():
        module, sep, deps = line.partition(":")
        if not sep:
            lines.append(line)
            continue
        lines.append(f"{fix(module)}:" + "".join(f" {fix(d)}" for d in deps.split()))
    return "".join(f"{line}\n" for line in lines)


def launch_script(
    program: str,
    args: Sequence[str] = (),
    *,
    argv0: str | None = None,
    path: bool = False,
    shell: str = SHELL,
    before: str = "",
) -> bytes:
    """A shell script that runs the dynamic ``program`` through the image's loader (with its arguments).

    ``path``: also put the image's programs first on ``PATH`` (the entry points).
    ``shell``: the interpreter line's program (:func:`shell_of`); ``before``: lines run first.
    """
    lines = [f"#!{shell}"]
    if path:
        lines.append(f"export PATH={layout.PATH}")
    if before:
        lines.append(before.rstrip("\n"))
    argv = [*layout.loader_argv(program, argv0), *args]
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv) + ' "$@"')
    return ("\n".join(lines) + "\n").encode()


def agent_main() -> bytes:
    """The Python side of the entry point: straight into the agent (run with ``-S``)."""
    return (
        b'"""iscsiboot initramfs entry point: hand over to the boot agent."""\n'
        b"import sys\n"
        b"from iscsiboot.agent.init import main\n"
        b"sys.exit(main())\n"
    )


def cli_main() -> bytes:
    """The Python side of ``iscsiboot`` inside the image (hook mode: ``iscsiboot agent run --hook F``)."""
    return b"import sys\nfrom iscsiboot.cli import main\nsys.exit(main())\n"


def shell_of(busybox: bool) -> str:
    """The scripts' interpreter line: the image's static busybox, else the base's ``/bin/sh``."""
    return f"{layout.BUSYBOX} sh" if busybox else "/bin/sh"


# PID 1's first lines: the NIC drivers load (in the background, through modprobe and the
# modules' aliases) while the interpreter starts; the agent's start-up child waits for this
# job (its pid in PRELOAD_ENV) and loads whatever is still missing.
NIC_PRELOAD = f"{layout.BIN}/nic-preload"
PRELOAD_ENV = agent_modules.PRELOAD_ENV
PRELOAD_LINES = f"""if [ "$$" = 1 ] && command -v modprobe >/dev/null 2>&1; then
  [ -d /sys/bus ] || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys 2>/dev/null
  {NIC_PRELOAD} /sys </dev/null >/dev/null 2>&1 &
  export {PRELOAD_ENV}=$!
fi"""


def nic_preload_script(shell: str = SHELL) -> bytes:
    """``nic-preload SYSFS``: modprobe the drivers of the network devices present, twice.

    The same devices as the agent's own matcher (:data:`~iscsiboot.agent.phases.modules.NIC_PCI_CLASS`,
    :data:`~iscsiboot.agent.phases.modules.NIC_VIRTIO_ALIAS`); the second round finds the NIC
    that a bus driver (virtio_pci) has just revealed.
    """
    pci, virtio = agent_modules.NIC_PCI_CLASS, agent_modules.NIC_VIRTIO_ALIAS
    return f"""#!{shell}
sysfs=$1
for round in 1 2; do
  set --
  for dev in "$sysfs"/bus/pci/devices/*; do
    read -r class < "$dev/class" || continue
    case $class in {pci}*) read -r alias < "$dev/modalias" && set -- "$@" "$alias";; esac
  done 2>/dev/null
  for dev in "$sysfs"/bus/virtio/devices/*; do
    read -r alias < "$dev/modalias" && case $alias in {virtio}*) set -- "$@" "$alias";; esac
  done 2>/dev/null
  [ "$#" -gt 0 ] || exit 0
  modprobe -qab "$@"
done
""".encode()


def init_script(shell: str = SHELL) -> bytes:
    """``/init`` (or the overlay's entry point): the interpreter, through the image's loader."""
    return launch_script(
        layout.PYTHON_ELF,
        ["-S", f"{layout.LIBEXEC}/init"],
        argv0=layout.PYTHON,
        path=True,
        shell=shell,
        before=PRELOAD_LINES,
    )


def cli_script(shell: str = SHELL) -> bytes:
    """``iscsiboot`` inside the image: the command line through the image's loader."""
    return launch_script(
        layout.PYTHON_ELF, ["-S", f"{layout.LIBEXEC}/iscsiboot"], argv0=layout.PYTHON, path=True, shell=shell
    )


ENTRY = f"{PREFIX}/init"  # the overlay's entry point (rdinit=/usr/lib/iscsiboot/init)

HOOK_README = f"""iscsiboot overlay
=================

This archive was appended to a distribution initramfs
(cat base-initramfs overlay > initramfs).  Everything it added lives
under {layout.PREFIX} (the base's own files, its C library and loader
included, are left as they were); only --replace-init also writes /init.

  {layout.PREFIX}/init           the agent as PID 1 (boot with rdinit={layout.PREFIX}/init)
  {layout.BIN}/iscsiboot  the command line (hook mode below)
  {layout.BIN}/           the launch scripts (run by the base's /bin/sh; by a static
                                    busybox here when built with --busybox)
  {layout.LIBEXEC}/       python3.11, e2fsck, iscsistart: run only through
                                    the loader in {layout.LIB}, never directly
  {layout.LIB}/           the C library, its loader, the other libraries, python3.11/
  {layout.PREFIX}/modules/VER    kernel modules for the boot path and their index, which
                                    the agent reads first (then the base's: NIC drivers come
                                    from the base unless built with --module NAME)
  {layout.PREFIX}/initramfs.json what was built (kernel, transport, modules, paths)

Hook mode: the base's own /init stays PID 1.  With /proc, /sys and /dev
mounted, it asks the agent for the network, the iSCSI login and the System
and Storage devices, then mounts and switches root itself:

    {layout.BIN}/iscsiboot agent run --hook /run/iscsiboot.env
    . /run/iscsiboot.env
    if [ "$ISCSIBOOT_OK" != 1 ]; then
        echo "iscsiboot: $ISCSIBOOT_PHASE: $ISCSIBOOT_ERROR ($ISCSIBOOT_FIX)"; exec sh
    fi
    mount -o ro "$ISCSIBOOT_SYSTEM" /sysroot      # the System partition
    exec switch_root /sysroot /sbin/init

The file holds KEY='value' lines: ISCSIBOOT_OK, _PHASE, _ERROR, _FIX,
_SYSTEM, _STORAGE, _IFACE, _ADDRESS, _PREFIX, _GATEWAY, _DNS, _SESSIONS.

Or let the agent do everything: build with --replace-init, or boot with
rdinit={layout.PREFIX}/init.
""".encode()


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


def _skeleton(inp: PlanInputs) -> list[Item]:
    """The full image's root: folders, usrmerge links, device nodes, busybox's applets, shortcuts."""
    items = [
        _dir(d) for d in ("dev", "proc", "sys", "run", "root", "etc", "usr/bin", "usr/sbin", "usr/lib", "var")
    ]
    items.append(_dir("tmp", 0o1777))
    items.append(Item("dev/console", Kind.CHAR, 0o600, "layout", rdev=(5, 1)))
    items.append(Item("dev/null", Kind.CHAR, 0o666, "layout", rdev=(1, 3)))
    for top in ("bin", "sbin", "lib", "lib64"):
        items.append(_link(top, f"usr/{top}"))
    rel_bin = f"../{BIN.removeprefix('usr/')}"  # usr/bin/x -> ../lib/iscsiboot/bin/x
    shortcuts = {
        "usr/bin/python3.11": "python3.11",
        "usr/bin/python3": "python3.11",
        "usr/bin/iscsiboot": "iscsiboot",
    }
    for path, name in shortcuts.items():
        items.append(_link(path, f"{rel_bin}/{name}"))
    if inp.busybox is not None:
        for applet in sorted({normalize_applet(a) for a in inp.applets}):
            if applet not in shortcuts:
                items.append(_link(applet, f"{rel_bin}/busybox", "busybox"))
    return items


def make_plan(inp: PlanInputs) -> list[Item]:
    """The items of the image, unsorted (the cpio writer sorts).

    Both variants keep the runtime under :data:`PREFIX`; the full image adds the root
    around it (:func:`_skeleton`) and ``/init``.  An overlay writes nothing else, apart
    from ``/init`` with ``replace_init``.
    """
    overlay = inp.variant is Variant.OVERLAY
    shell = shell_of(inp.busybox is not None)
    items: list[Item] = [] if overlay else _skeleton(inp)
    # python
    items.append(_file(f"{LIBEXEC}/python3.11", "python interpreter", inp.python, 0o755))
    items.append(
        _content(f"{BIN}/python3.11", "entry points", launch_script(layout.PYTHON_ELF, shell=shell), 0o755)
    )
    for archive, source, compile_it in inp.python_files:
        items.append(
            Item(archive, Kind.FILE, 0o644, _group_of_python(archive), source=source, compile_pyc=compile_it)
        )
    if inp.codecache:
        items.append(Item(CODECACHE, Kind.FILE, 0o644, "iscsiboot", content=inp.codecache))
    # programs: the ELF files in libexec, each with its launch script in bin
    for name, program in (("e2fsck", inp.e2fsck), ("iscsistart", inp.iscsistart)):
        if program is not None:
            items.append(_file(f"{LIBEXEC}/{name}", "programs", program, 0o755))
            items.append(
                _content(
                    f"{BIN}/{name}",
                    "entry points",
                    launch_script(f"{layout.LIBEXEC}/{name}", shell=shell),
                    0o755,
                )
            )
    if inp.busybox is not None:
        items.append(_file(f"{BIN}/busybox", "busybox", inp.busybox, 0o755))
    # shared libraries (by soname, contents of the real file), the loader among them
    for soname, source in inp.libraries:
        items.append(_file(f"{LIB}/{soname}", "shared libraries", source, 0o755))
    # kernel modules
    mdir = modules_dir(inp.variant, inp.kernel_version)
    for rel, source in inp.modules:
        items.append(_file(f"{mdir}/{rel}", "kernel modules", source))
    for name, source in inp.module_index:
        if not overlay or name in OVERLAY_INDEX_FILES:
            items.append(_file(f"{mdir}/{name}", "kernel modules", source))
    # entry points
    items.append(_content(f"{LIBEXEC}/init", "entry points", agent_main()))
    items.append(_content(f"{LIBEXEC}/iscsiboot", "entry points", cli_main()))
    items.append(_content(f"{BIN}/iscsiboot", "entry points", cli_script(shell), 0o755))
    items.append(_content(NIC_PRELOAD.lstrip("/"), "entry points", nic_preload_script(shell), 0o755))
    items.append(_content(ENTRY, "entry points", init_script(shell), 0o755))
    if not overlay or inp.replace_init:
        items.append(_content("init", "entry points", init_script(shell), 0o755))
    if overlay:
        items.append(_content(f"{PREFIX}/README", "entry points", HOOK_README))
    manifest = {
        "variant": inp.variant.value,
        "transport": inp.transport,
        "kernel": inp.kernel_version,
        "modules_dir": "/" + mdir,
        "modules_index": "/" + mdir,
        "load_order": list(inp.load_order),
        "crc32c": list(inp.crc32c),
        "iscsistart": f"{layout.BIN}/iscsistart" if inp.iscsistart is not None else None,
        "e2fsck": f"{layout.BIN}/e2fsck" if inp.e2fsck is not None else None,
        "busybox": layout.BUSYBOX if inp.busybox is not None else None,
        "python": layout.PYTHON,
        "loader": layout.LOADER,
        "cli": f"{layout.BIN}/iscsiboot",
        "entry": "/init" if not overlay or inp.replace_init else "/" + ENTRY,
        **dict(sorted(inp.extra.items())),
    }
    items.append(
        _content(MANIFEST, "entry points", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    )
    return items


def archive_parents(variant: Variant) -> frozenset[str]:
    """Folders the archive must not carry as members (see :data:`BASE_FOLDERS`)."""
    return BASE_FOLDERS if variant is Variant.OVERLAY else frozenset()
