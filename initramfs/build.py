"""Execute an initramfs plan: discover inputs, compile, index modules, pack, compress, write.

``build()`` is the one entry point (the CLI and the QEMU tests call it).
Reproducible: the same inputs give byte-identical archives (fixed mtime,
sorted entries, code objects naming image paths only, deterministic
compressors).  Compiled ``.pyc`` files are cached by content hash under the
cache folder, so a second build mostly packs and compresses.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import lzma
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from iscsiboot.agent.transport import KERNEL_ISCSI_MODULES
from iscsiboot.errors import EnvironmentProblem, UsageError
from iscsiboot.initramfs import cpio, elf, modules, pyruntime
from iscsiboot.initramfs.kernel import KernelTree, default_cache
from iscsiboot.initramfs.plan import Item, PlanInputs, Variant, absolute_dep, archive_parents, make_plan
from iscsiboot.initramfs.plan import modules_dir as plan_modules_dir
from iscsiboot.output import write_atomic
from iscsiboot.proc import run, which


class Compression(Enum):
    XZ = "xz"
    ZSTD = "zstd"
    GZIP = "gzip"
    NONE = "none"


BUSYBOX = "/bin/busybox"  # Debian's busybox-static: no loader, so it runs in any base
E2FSCK = "/sbin/e2fsck"
ISCSISTART = "/sbin/iscsistart"
# Loaded with dlopen(), so absent from DT_NEEDED: libgcc_s, which
# glibc needs for pthread_exit (without it a Python thread ending aborts the process).
DLOPENED: tuple[tuple[str, str], ...] = (("libgcc_s.so.1", "libgcc-s1"),)
INDEX_FILES = (
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.builtin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.devname",
    "modules.order",
)


@dataclass(frozen=True)
class BuildResult:
    output: Path | None
    variant: str
    compression: str
    kernel_version: str
    size: int  # bytes of the (compressed) archive
    uncompressed: int  # bytes of the cpio
    files: int
    modules: tuple[str, ...]
    groups: dict[str, int]  # group -> uncompressed content bytes
    largest: tuple[tuple[str, int], ...]
    seconds: float
    sha256: str
    warnings: tuple[str, ...] = ()
    archive: bytes = field(default=b"", repr=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "output": str(self.output) if self.output else None,
            "variant": self.variant,
            "compression": self.compression,
            "kernel_version": self.kernel_version,
            "size": self.size,
            "uncompressed": self.uncompressed,
            "files": self.files,
            "modules": list(self.modules),
            "groups": self.groups,
            "largest": [{"path": p, "size": s} for p, s in self.largest],
            "seconds": round(self.seconds, 2),
            "sha256": self.sha256,
            "warnings": list(self.warnings),
        }


def modules_dir_of(root: Path, version: str) -> Path:
    """``root``: a kernel tree (with ``lib/modules/<ver>``), ``lib/modules``, or the folder itself."""
    for candidate in (
        root / "lib" / "modules" / version,
        root / "usr" / "lib" / "modules" / version,
        root / version,
        root,
    ):
        if (candidate / "modules.order").is_file() or (candidate / "modules.dep").is_file():
            if candidate == root and root.name != version:
                continue
            return candidate
    raise UsageError(
        f"no modules of kernel {version} under {root}",
        where="--modules-root",
        fix="give the folder that holds lib/modules/<version> (a dpkg -x tree) or lib/modules",
    )


def decompress(data: bytes) -> bytes:
    """The cpio inside one compressed initramfs (xz, zstd, gzip or none), by its magic number."""
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.decompress(data)
    if data.startswith(b"\x1f\x8b"):
        return gzip.decompress(data)
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        zstd = which("zstd", hint="apt-get install zstd")
        with tempfile.TemporaryDirectory(prefix="iscsiboot-zstd-") as tmp:
            src, dst = Path(tmp) / "in.zst", Path(tmp) / "out.cpio"
            src.write_bytes(data)
            run([zstd, "-d", "-q", "-f", "-o", str(dst), str(src)], what="decompress the initramfs with zstd")
            return dst.read_bytes()
    return data


def xz_filters(size: int, *, x86_code: bool, preset: int = 9) -> list[dict[str, int]]:
    """The xz filter chain: x86 branch conversion (BCJ) for x86 images, then LZMA2.

    BCJ makes the call and jump targets of machine code absolute, so repeated
    calls compress better (about 50 KB less for the overlay); the kernel's xz
    decoder has it on x86 (``XZ_DEC_X86``, default y there).  The dictionary is
    the smallest power of two that holds the whole archive (at least 1 MiB):
    the same output as preset 9's 64 MiB, but the kernel's decoder allocates
    only that much while it unpacks the initramfs.
    """
    dict_size = min(64 << 20, max(1 << 20, 1 << max(0, size - 1).bit_length()))
    lzma2 = {"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": dict_size}
    return [{"id": lzma.FILTER_X86}, lzma2] if x86_code else [lzma2]


def compress(data: bytes, how: Compression, *, level: int | None = None, x86_code: bool = False) -> bytes:
    """Deterministic compression the kernel's initramfs unpacker accepts.

    ``x86_code``: the archive is for an x86 kernel (xz then adds the x86 BCJ filter).
    """
    if how is Compression.NONE:
        return data
    if how is Compression.XZ:
        # The kernel's xz decoder needs CRC32 (or no) checks, not the default CRC64.
        filters = xz_filters(len(data), x86_code=x86_code, preset=level or 9)
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)
    if how is Compression.GZIP:
        return gzip.compress(data, compresslevel=level or 9, mtime=0)
    zstd = which("zstd", hint="apt-get install zstd")
    with tempfile.TemporaryDirectory(prefix="iscsiboot-zstd-") as tmp:
        src, dst = Path(tmp) / "in.cpio", Path(tmp) / "out.zst"
        src.write_bytes(data)
        run(
            [zstd, f"-{level or 19}", "-q", "-f", "--no-progress", "-o", str(dst), str(src)],
            what="compress the initramfs with zstd",
            timeout=900,
        )
        return dst.read_bytes()


ARCHIVES_KEPT = 8


def _cached_compress(cache: Path, archive: bytes, how: Compression, *, x86_code: bool) -> bytes:
    """Compress, reusing an earlier result for the same cpio (xz -9 of 35 MB takes ~25 s)."""
    if how is Compression.NONE:
        return archive
    folder = cache / "archives"
    kind = f"{how.value}-x86" if x86_code and how is Compression.XZ else how.value
    path = folder / f"{hashlib.sha256(archive).hexdigest()}.{kind}"
    if path.is_file():
        os.utime(path)
        return path.read_bytes()
    packed = compress(archive, how, x86_code=x86_code)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, packed)
    old = sorted(folder.glob("*.*"), key=lambda p: p.stat().st_mtime, reverse=True)[ARCHIVES_KEPT:]
    for stale in old:
        stale.unlink(missing_ok=True)
    return packed


def _pyc_path(cache: Path, source: Path, archive: str, optimize: int, compiler: bytes) -> Path:
    """Where the .pyc of ``source`` is cached; ``compiler``: the compiler script's text (a change to
    how it compiles is a new key)."""
    key = hashlib.sha256(
        b"\0".join(
            [
                importlib.util.MAGIC_NUMBER,
                " ".join(pyruntime.COMPILE_FLAGS).encode(),
                archive.encode(),
                str(optimize).encode(),
                compiler,
                source.read_bytes(),
            ]
        )
    ).hexdigest()
    return cache / key[:2] / f"{key}.pyc"


def _compile_cached(cache: Path, items: Sequence[Item], optimize: int) -> dict[str, bytes]:
    """archive path -> .pyc of every item to compile; the ones not cached compile in one batch."""
    out: dict[str, bytes] = {}
    todo: list[tuple[Path, str, Path]] = []  # (source, archive path, cache file)
    compiler = pyruntime.COMPILER.read_bytes()
    for item in items:
        if not item.compile_pyc or item.source is None:
            continue
        path = _pyc_path(cache, item.source, item.path, optimize, compiler)
        if path.is_file():
            out[item.path] = path.read_bytes()
        else:
            todo.append((item.source, item.path, path))
    compiled = pyruntime.compile_many([(source, archive) for source, archive, _ in todo], optimize=optimize)
    for (_source, archive, path), data in zip(todo, compiled, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        out[archive] = data
    return out


def _applets(busybox: Path) -> list[str]:
    listing = run([str(busybox), "--list-full"], what="list the busybox applets", timeout=30)
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()]


def _index_modules(src_dir: Path, version: str, rel_paths: Sequence[str], work: Path) -> dict[str, Path]:
    """Copy the chosen module files into a staging tree, run depmod there, return its index files."""
    stage = work / "lib" / "modules" / version
    for rel in rel_paths:
        dest = stage / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_dir / rel, dest)
    order = src_dir / "modules.order"
    chosen = set(rel_paths)
    stage.mkdir(parents=True, exist_ok=True)
    if order.is_file():
        lines = [ln for ln in order.read_text().splitlines() if ln.strip() in chosen]
        (stage / "modules.order").write_text("".join(f"{ln}\n" for ln in lines))
    for name in ("modules.builtin", "modules.builtin.modinfo"):
        if (src_dir / name).is_file():
            shutil.copyfile(src_dir / name, stage / name)
    run(
        [which("depmod", hint="apt-get install kmod"), "-b", str(work), version],
        what=f"index the image's modules for kernel {version}",
        timeout=300,
    )
    return {name: stage / name for name in INDEX_FILES if (stage / name).is_file()}


def _refuse_iscsi(names: Sequence[str]) -> None:
    """An nbd image carries no kernel iSCSI module (an extra ``--module`` may pull one in)."""
    found = sorted(set(names) & set(KERNEL_ISCSI_MODULES))
    if found:
        raise UsageError(
            f"the modules asked for pull in kernel iSCSI ({', '.join(found)}), which an nbd image leaves out",
            where="--module",
            fix="drop the module, or build with --transport auto",
        )


def _read_item(item: Item, compiled: dict[str, bytes]) -> bytes:
    if item.source is None:
        return item.content
    if item.compile_pyc:
        return compiled[item.path]
    return item.source.read_bytes()


def build(
    *,
    kernel_version: str | None = None,
    modules_root: Path | None = None,
    kernel: KernelTree | None = None,
    output: Path | None = None,
    overlay: bool = False,
    compression: Compression | str = Compression.ZSTD,
    extra_modules: Iterable[str] = (),
    iscsistart: bool = False,
    replace_init: bool = False,
    cache: Path | None = None,
    optimize: int = 2,
    mtime: int | None = None,
    package_stage: Path | None = None,
    lean: bool = True,
    fsck: bool | None = None,
    transport: str = "auto",
    busybox: bool | None = None,
) -> BuildResult:
    """Build the initramfs (or overlay) and write it to ``output`` atomically (if given).

    ``package_stage`` is a folder already holding ``iscsiboot/`` (from
    :func:`pyruntime.stage_package`); by default the installed package is
    staged afresh.  ``lean`` (the default) replaces ``ssl`` by a stand-in and
    leaves out ``_ssl``, ``_hashlib``, libssl (and libcrypto unless iscsistart
    needs it); hashlib then uses the MD5/SHA code built into Debian's
    interpreter.  It also puts stand-ins for modules the libraries import but
    never call at boot (:data:`pyruntime.UNUSED`, ``unittest.mock``).
    ``optimize`` 2 (the default) compiles without docstrings and asserts, and the standard
    library's and the libraries' code without line numbers (:func:`pyruntime.keeps_lines`).  Both are measured
    in ``benchmarks/boot.py``.  ``fsck``: carry e2fsck and its libraries (the agent checks
    Storage with it); by default the full image does and the overlay does not, as the
    distribution initramfs it is appended to has its own (LibreELEC's and Debian's do).
    ``busybox``: carry a static busybox, the shell of the image's scripts; by default the full
    image does and the overlay does not: its scripts run with the base's ``/bin/sh``, its
    ``modprobe`` and ``udhcpc`` are the base's where it has them (else pyroute2's DHCP client).
    ``transport`` (:data:`modules.TRANSPORTS`): ``kernel`` carries kernel iSCSI's modules,
    ``nbd`` the NBD client's and the agent's NBD daemon but no kernel iSCSI module at all,
    ``auto`` (the default) both, and the agent picks at boot.
    """
    started = time.monotonic()
    how = Compression(compression) if isinstance(compression, str) else compression
    if transport not in modules.TRANSPORTS:
        raise UsageError(
            f"unknown transport {transport!r}", where="--transport", fix="use auto, kernel or nbd"
        )
    if iscsistart and transport == "nbd":
        raise UsageError(
            "iscsistart logs in through kernel iSCSI, which an nbd image leaves out",
            where="--backend iscsistart",
            fix="use --transport auto or kernel with --backend iscsistart",
        )
    if kernel is not None:
        kernel_version, src_dir = kernel.version, kernel.modules
    else:
        if kernel_version is None or modules_root is None:
            raise UsageError(
                "the kernel is not named",
                where="--kernel-version/--modules-root",
                fix="give --kernel-root DIR, or --kernel-version VER with --modules-root DIR",
            )
        src_dir = modules_dir_of(Path(modules_root), kernel_version)
    if mtime is None:
        mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    cache_root = cache if cache is not None else default_cache()
    cache_dir = cache_root / "pyc"
    variant = Variant.OVERLAY if overlay else Variant.FULL
    warnings: list[str] = []

    with tempfile.TemporaryDirectory(prefix="iscsiboot-initramfs-") as tmp_name:
        tmp = Path(tmp_name)
        # python runtime
        stage = tmp / "stage"
        if package_stage is None:
            stage.mkdir()
            pyruntime.stage_package(stage)
        else:
            shutil.copytree(package_stage, stage)
        if lean:
            pyruntime.add_lean(stage)
        site = pyruntime.site_packages()
        wanted = pyruntime.runtime_modules(transport) + pyruntime.ALWAYS
        traced = pyruntime.trace(wanted, stage, site)
        if "iscsiboot.agent.init" in traced.failed:
            warnings.append(f"iscsiboot.agent.init does not import: {traced.failed['iscsiboot.agent.init']}")
        for name, why in sorted(traced.failed.items()):
            if name != "iscsiboot.agent.init":
                warnings.append(f"runtime module {name} not included: {why}")
        pyfiles = pyruntime.place(traced.files.values(), stage, site)
        # programs and their libraries
        python = Path(pyruntime.PYTHON)
        if fsck is None:
            fsck = not overlay
        e2fsck = Path(E2FSCK).resolve() if fsck else None
        start = Path(ISCSISTART).resolve() if iscsistart else None
        if busybox is None:
            busybox = not overlay
        static_shell = Path(BUSYBOX).resolve() if busybox else None
        for prog in (e2fsck, start, static_shell):
            if prog is not None and not prog.is_file():
                raise EnvironmentProblem(f"{prog} is not installed", fix="see tools/system-packages.txt")
        if static_shell is not None and elf.dynamic_info(static_shell.read_bytes()).interpreter is not None:
            raise EnvironmentProblem(
                f"{BUSYBOX} is linked dynamically: the image runs it without a loader",
                fix="apt-get install busybox-static",
            )
        elf_inputs = [python] + [p.source for p in pyfiles if p.kind is pyruntime.Kind.EXTENSION]
        if e2fsck is not None:
            elf_inputs.append(e2fsck)
        if start is not None:
            elf_inputs.append(start)
        dlopened: dict[str, Path] = {}
        for soname, package in DLOPENED:
            hit = elf._find(soname, (), Path("/"))
            if hit is None:
                raise EnvironmentProblem(f"{soname} is not installed", fix=f"apt-get install {package}")
            dlopened[soname] = hit[0]
            elf_inputs.append(hit[0])
        interp, libs = elf.closure(elf_inputs)
        libraries = [(lib.soname, lib.host_path) for lib in libs]
        known = {s for s, _ in libraries}
        libraries += [(soname, path) for soname, path in dlopened.items() if soname not in known]
        if interp is not None and Path(interp).name not in known:  # the image's own loader
            libraries.append((Path(interp).name, Path(interp).resolve()))
        # kernel modules
        index = modules.load_index(src_dir) if (src_dir / "modules.dep").is_file() else None
        if index is None:
            raise UsageError(
                f"{src_dir} has no modules.dep",
                where="--modules-root",
                fix=f"run depmod -b ROOT {kernel_version}",
            )
        wanted_mods = list(modules.default_modules(overlay=overlay, transport=transport))
        if transport == "auto":
            try:
                modules.lookup(index, "nbd")
            except UsageError:
                wanted_mods.remove("nbd")
                warnings.append(
                    f"kernel {kernel_version} has no NBD client: the image can boot only over kernel iSCSI"
                )
        closure = modules.resolve(index, wanted_mods + [m for m in extra_modules if m])
        if transport == "nbd":
            _refuse_iscsi(closure.names)
        index_files = _index_modules(src_dir, kernel_version, closure.paths, tmp / "depmod")
        if overlay and "modules.dep" in index_files:
            dep = tmp / "modules.dep"
            folder = plan_modules_dir(variant, kernel_version)
            dep.write_text(absolute_dep(index_files["modules.dep"].read_text(), folder))
            index_files["modules.dep"] = dep
        inputs = PlanInputs(
            kernel_version=kernel_version,
            python=python,
            python_files=[(p.archive, p.source, p.kind is pyruntime.Kind.MODULE) for p in pyfiles],
            libraries=sorted(libraries),
            modules=[(rel, src_dir / rel) for rel in closure.paths],
            module_index=sorted(index_files.items()),
            load_order=closure.names,
            crc32c=closure.crc32c,
            busybox=static_shell,
            applets=() if overlay or static_shell is None else _applets(static_shell),
            e2fsck=e2fsck,
            iscsistart=start,
            variant=variant,
            replace_init=replace_init,
            transport=transport,
            codecache=traced.codecache,
        )
        items = make_plan(inputs)
        compiled = _compile_cached(cache_dir, items, optimize)
        entries: list[cpio.Entry] = []
        groups: dict[str, int] = {}
        sizes: list[tuple[str, int]] = []
        for item in items:
            data = _read_item(item, compiled)
            entries.append(cpio.Entry(item.path, item.kind, item.mode, data, item.rdev))
            if item.kind is cpio.Kind.FILE:
                groups[item.group] = groups.get(item.group, 0) + len(data)
                sizes.append((item.path, len(data)))
        parents = archive_parents(variant)
        archive = cpio.write_newc(entries, mtime=mtime, existing_parents=parents)
    with python.open("rb") as handle:
        x86_code = elf.machine(handle.read(20)) in (elf.EM_386, elf.EM_X86_64)
    packed = _cached_compress(cache_root, archive, how, x86_code=x86_code)
    if output is not None:
        write_atomic(output, packed)
    sizes.sort(key=lambda ps: (-ps[1], ps[0]))
    return BuildResult(
        output=output,
        variant=variant.value,
        compression=how.value,
        kernel_version=kernel_version,
        size=len(packed),
        uncompressed=len(archive),
        files=len(cpio.canonical(entries, existing_parents=parents)),
        modules=closure.names,
        groups=dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        largest=tuple(sizes[:15]),
        seconds=time.monotonic() - started,
        sha256=hashlib.sha256(packed).hexdigest(),
        warnings=tuple(warnings),
        archive=packed,
    )
