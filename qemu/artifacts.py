"""The files every scenario boots, built once and cached.

* the kernel: the current Debian ``linux-image-amd64`` (``fetch_kernel``),
* the initramfs with the agent (the initramfs builder), or the overlay
  appended to a minimal busybox initramfs,
* the test SYSTEM squashfs (:mod:`iscsiboot.qemu.system`).

Initramfs images are cached under a key made of the kernel release and a
digest of the package's own source, so a change to the agent rebuilds them.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path

import iscsiboot
from iscsiboot.errors import UsageError
from iscsiboot.initramfs.build import build
from iscsiboot.initramfs.cpio import Entry, write_newc
from iscsiboot.initramfs.kernel import KernelTree, default_cache, fetch_kernel
from iscsiboot.output import write_atomic
from iscsiboot.qemu.harness import Artifacts
from iscsiboot.qemu.scenario import GUEST_NIC_MODULES
from iscsiboot.qemu.scripts import script
from iscsiboot.qemu.system import _busybox, cached_system

STALE_SECONDS = 6 * 3600
MINIMAL_INIT = script("minimal-init.sh")
MINIMAL_APPLETS = (
    "sh",
    "mount",
    "umount",
    "switch_root",
    "poweroff",
    "reboot",
    "cat",
    "ls",
    "sleep",
    "mkdir",
)


def source_digest() -> str:
    """A digest of every file (modules, scripts, stand-ins) of the installed iscsiboot packages."""
    digest = hashlib.sha256()
    roots = sorted({Path(p).resolve() for p in iscsiboot.__path__})
    base = Path(iscsiboot.__file__).resolve().parent.parent
    for folder in sorted(
        {*roots, *(base / d for d in ("agent", "initramfs", "cmdline", "ibft", "disk", "iscsi"))}
    ):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix != ".pyc" and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(folder.parent)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def minimal_initramfs() -> bytes:
    """A busybox-only initramfs whose /init hands over to an appended overlay."""
    busybox = _busybox().read_bytes()
    entries = [
        Entry.directory("bin"),
        Entry.directory("dev"),
        Entry.directory("proc"),
        Entry.directory("sys"),
        Entry.directory("run"),
        Entry.directory("tmp"),
        Entry.directory("usr"),  # every base has /usr/lib: an overlay's files go below it
        Entry.directory("usr/lib"),
        Entry.char("dev/console", 5, 1),
        Entry.char("dev/null", 1, 3, 0o666),
        Entry.file("bin/busybox", busybox, 0o755),
        *(Entry.symlink(f"bin/{applet}", "busybox") for applet in MINIMAL_APPLETS),
        Entry.file("init", MINIMAL_INIT.encode(), 0o755),
    ]
    return write_newc(entries)


def build_initramfs(
    kernel: KernelTree,
    dest: Path,
    *,
    overlay: bool,
    cache: Path | None = None,
    iscsistart: bool = False,
    transport: str = "auto",
) -> Path:
    """Run the initramfs builder for ``kernel`` into ``dest`` (written atomically).

    The minimal base an overlay is appended to has no modules: the overlay brings the
    guest NIC's drivers itself.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    nics = GUEST_NIC_MODULES if overlay else ()
    build(
        kernel=kernel, output=dest, overlay=overlay, cache=cache, iscsistart=iscsistart,
        extra_modules=nics, transport=transport,
    )  # fmt: skip
    return dest


def prune(folder: Path, keep: set[Path], *, age: float = STALE_SECONDS) -> None:
    """Remove cached images of other source versions that nobody used for ``age`` seconds."""
    now = time.time()
    for path in folder.glob("*.img"):
        if path not in keep:
            with contextlib.suppress(OSError):
                if now - path.stat().st_atime > age and now - path.stat().st_mtime > age:
                    path.unlink()


def cached_initramfs(
    kernel: KernelTree,
    cache: Path,
    *,
    overlay: bool = False,
    iscsistart: bool = False,
    transport: str = "auto",
) -> Path:
    """The agent's initramfs (or the overlay on top of the minimal one), cached by source digest.

    ``iscsistart=True`` adds the tool (for ``iscsiboot.backend=iscsistart``); ``transport``
    is the builder's (``nbd``: no kernel iSCSI module in the image).
    """
    key = f"{kernel.version}-{source_digest()}" + ("-iscsistart" if iscsistart else "")
    key += "" if transport == "auto" else f"-{transport}"
    folder = cache / "initramfs"
    if not overlay:
        dest = folder / f"initrd-{key}.img"
        if not dest.is_file():
            build_initramfs(
                kernel, dest, overlay=False, cache=cache, iscsistart=iscsistart, transport=transport
            )
            prune(folder, {dest})
        return dest
    combined = folder / f"initrd-overlay-{key}.img"
    if not combined.is_file():
        part = folder / f"overlay-{key}.img"
        if not part.is_file():
            build_initramfs(
                kernel, part, overlay=True, cache=cache, iscsistart=iscsistart, transport=transport
            )
        write_atomic(combined, minimal_initramfs() + part.read_bytes())
        prune(folder, {combined, part})
    return combined


def prepare(
    cache: Path | None = None,
    *,
    kernel: Path | None = None,
    initrd: Path | None = None,
    overlay: bool = False,
    iscsistart: bool = False,
    transport: str = "auto",
    filler_mb: int = 0,
) -> Artifacts:
    """Kernel, initramfs and SYSTEM for the scenarios (downloaded/built only when missing).

    ``filler_mb``: a SYSTEM that large (:func:`iscsiboot.qemu.system.build_system`).
    """
    base = cache if cache is not None else default_cache()
    for what, path in (("--kernel", kernel), ("--initrd", initrd)):
        if path is not None and not path.is_file():
            raise UsageError(f"{what} {path} does not exist")
    system = cached_system(base / "system", filler_mb=filler_mb)
    if kernel is not None and initrd is not None:
        return Artifacts(kernel=kernel, initrd=initrd, system=system)
    tree = fetch_kernel(base)
    if initrd is None:
        initrd = cached_initramfs(tree, base, overlay=overlay, iscsistart=iscsistart, transport=transport)
    return Artifacts(kernel=kernel or tree.vmlinuz, initrd=initrd, system=system, version=tree.version)
