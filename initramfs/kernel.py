"""Fetch a Debian kernel (vmlinuz plus its module tree) into a local cache.

``fetch_kernel()`` resolves a metapackage such as ``linux-image-amd64`` to the
real image package (``linux-image-6.1.0-56-amd64``), downloads that ``.deb``
with ``apt-get download``, unpacks it with ``dpkg -x`` and runs ``depmod -b``
(Debian's package ships no ``modules.dep``).  The tree is unpacked into a
temporary directory, a marker file is written last, and the directory is then
renamed into place: a tree without its marker is never used, so an interrupted
fetch is simply redone.  A second call finds the marker and downloads nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.errors import EnvironmentProblem, UsageError
from iscsiboot.proc import run

DEFAULT_PACKAGE = "linux-image-amd64"
MARKER = ".iscsiboot-complete"
_CONCRETE = re.compile(r"^linux-image-\d[\w.+~-]*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


@dataclass(frozen=True)
class KernelTree:
    """An unpacked kernel package: ``root`` is the ``dpkg -x`` tree."""

    version: str  # the kernel release, e.g. "6.1.0-56-amd64"
    vmlinuz: Path
    root: Path
    modules: Path  # root/lib/modules/<version>, with depmod output
    package: str = ""  # the concrete package, e.g. "linux-image-6.1.0-56-amd64"


def default_cache() -> Path:
    """``$ISCSIBOOT_CACHE`` or ``~/.cache/iscsiboot``."""
    env = os.environ.get("ISCSIBOOT_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "iscsiboot"


def parse_depends(text: str) -> list[str]:
    """The ``Depends:`` targets listed by ``apt-cache depends`` (pure)."""
    found: list[str] = []
    for line in text.splitlines():
        stripped = line.strip().lstrip("|")
        if stripped.startswith("Depends:"):
            name = stripped.split(":", 1)[1].strip()
            if name.startswith("<") and name.endswith(">"):
                name = name[1:-1]
            if name and name not in found:
                found.append(name)
    return found


def pick_image(package: str, depends: list[str]) -> str | None:
    """The concrete ``linux-image-<release>`` package that ``package`` stands for."""
    if _CONCRETE.match(package):
        return package
    images = [d for d in depends if _CONCRETE.match(d)]
    return images[0] if images else None


@functools.cache
def _resolve(package: str) -> str:
    if not _NAME.match(package):
        raise UsageError(
            f"not a Debian package name: {package!r}", where="package", fix="use e.g. linux-image-amd64"
        )
    if _CONCRETE.match(package):
        return package
    for attempt in range(2):
        result = run(["apt-cache", "depends", package], what=f"resolve {package}", check=False, timeout=120)
        image = pick_image(package, parse_depends(result.stdout))
        if image is not None:
            return image
        if attempt == 0:
            run(
                ["apt-get", "update", "-qq"],
                what="update the apt package lists",
                timeout=900,
                fix="run as root with access to the Debian archive",
            )
    raise EnvironmentProblem(
        f"apt does not know which kernel image {package!r} stands for",
        fix="check the package name and the apt sources",
    )


def _find_tree(root: Path) -> tuple[str, Path, Path]:
    """(release, vmlinuz, modules dir) inside an unpacked kernel package."""
    candidates = [root / "lib" / "modules", root / "usr" / "lib" / "modules"]
    for base in candidates:
        if base.is_dir():
            versions = sorted(p.name for p in base.iterdir() if p.is_dir())
            if versions:
                version = versions[-1]
                for boot in (root / "boot", root / "usr" / "lib" / "modules" / version):
                    for name in (f"vmlinuz-{version}", "vmlinuz"):
                        if (boot / name).is_file():
                            return version, boot / name, base / version
    raise EnvironmentProblem(
        f"{root} holds no kernel (no lib/modules/<release> with boot/vmlinuz-<release>)",
        fix="remove the folder and fetch again",
    )


def tree_from_dir(root: Path) -> KernelTree:
    """Describe an already unpacked kernel tree (``dpkg -x`` layout)."""
    try:
        version, vmlinuz, modules = _find_tree(root)
    except EnvironmentProblem as exc:
        raise UsageError(exc.what, where="--kernel-root", fix="give the folder dpkg -x made") from None
    return KernelTree(version=version, vmlinuz=vmlinuz, root=root, modules=modules)


def _load_cached(final: Path) -> KernelTree | None:
    marker = final / MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
        version = str(info["version"])
    except (ValueError, KeyError, OSError):
        return None
    modules = final / str(info.get("modules", f"lib/modules/{version}"))
    vmlinuz = final / str(info.get("vmlinuz", f"boot/vmlinuz-{version}"))
    if not (modules / "modules.dep").is_file() or not vmlinuz.is_file():
        return None
    return KernelTree(
        version=version, vmlinuz=vmlinuz, root=final, modules=modules, package=str(info["package"])
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def depmod(root: Path, version: str) -> None:
    """Run ``depmod -b root version`` (writes modules.dep, modules.alias, ...)."""
    run(
        ["depmod", "-b", str(root), version],
        what=f"index the modules of kernel {version}",
        timeout=600,
        fix="install kmod",
    )


def fetch_kernel(cache: Path | None = None, *, package: str = DEFAULT_PACKAGE) -> KernelTree:
    """Download and unpack the kernel ``package`` stands for, or reuse the cached copy."""
    base = (cache if cache is not None else default_cache()) / "kernels"
    image = _resolve(package)
    final = base / image
    cached = _load_cached(final)
    if cached is not None:
        return cached
    with _locked(base / ".lock"):
        cached = _load_cached(final)
        if cached is not None:
            return cached
        if final.exists():
            shutil.rmtree(final)
        work = Path(tempfile.mkdtemp(prefix=f".{image}.", dir=base))
        try:
            download = work / "deb"
            download.mkdir()
            run(
                ["apt-get", "download", "-q", image],
                what=f"download {image}",
                cwd=download,
                timeout=1800,
                fix="check network access to the Debian archive (apt-get update)",
            )
            debs = sorted(download.glob("*.deb"))
            if not debs:
                raise EnvironmentProblem(f"apt-get download {image} left no .deb", fix="check apt's output")
            tree = work / "tree"
            run(["dpkg", "-x", str(debs[0]), str(tree)], what=f"unpack {debs[0].name}", timeout=900)
            shutil.rmtree(download)
            version, vmlinuz, modules = _find_tree(tree)
            depmod(tree, version)
            marker = {
                "package": image,
                "version": version,
                "vmlinuz": str(vmlinuz.relative_to(tree)),
                "modules": str(modules.relative_to(tree)),
            }
            (tree / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
            os.replace(tree, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    done = _load_cached(final)
    if done is None:
        raise EnvironmentProblem(f"the unpacked kernel in {final} is incomplete", fix="remove it and retry")
    return done
