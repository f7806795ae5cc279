"""The sdist and the wheel hold the whole package; installed normally, it builds an image on its own.

A copy of the checkout is built into an sdist, the sdist into a wheel, and the
wheel installed into a new, plain virtual environment outside the checkout
(its dependencies repacked from this environment: no network).  From there,
every module imports, and ``iscsiboot initramfs build`` makes an overlay whose
agent is the installed copy, while an audit hook records any file, folder,
import or command of the build that names the checkout.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from initramfs_support import test_kernel
from iscsiboot.initramfs import cpio
from iscsiboot.initramfs.plan import MANIFEST

CHECKOUT = Path(__file__).resolve().parents[2]
AUDIT = CHECKOUT / "tests" / "audit_checkout.py"
# Not copied for the build: version control, environments, caches and build output.
NOT_SOURCE = frozenset(
    {".git", ".venv", "build", "dist", "cache", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
)
NOT_PACKAGED = ("tests", "benchmarks", "tools", ".venv")
DEPENDENCIES = ("construct", "pyroute2")
MARK = "installed-copy-of-the-agent"
AGENT_PYC = "usr/lib/iscsiboot/lib/python3.11/iscsiboot/agent/__init__.pyc"
PHASES = "usr/lib/iscsiboot/lib/python3.11/iscsiboot/agent/phases"


def _ignore_top(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == CHECKOUT
    return {n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (top and n in NOT_SOURCE)}


def _package_files(source: Path) -> dict[str, Path]:
    """Installed path (``iscsiboot/agent/phases/login.py``) -> file, from pyproject.toml's package-dir."""
    config = tomllib.loads((source / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    files: dict[str, Path] = {}
    for package, folder in mapping.items():
        root = source / folder
        for path in root.rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                files["/".join([*package.split("."), *rel.parts])] = path
    return files


def _run(
    argv: list[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _wheel_of_installed(name: str, dest: Path) -> Path:
    """A wheel of the distribution ``name`` as this environment has it installed (pure Python)."""
    dist = importlib.metadata.distribution(name)
    wheel_info = dist.read_text("WHEEL") or ""
    tag = next(line.split(":", 1)[1].strip() for line in wheel_info.splitlines() if line.startswith("Tag:"))
    stem = f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}"
    info = f"{stem}.dist-info"
    skip = {f"{info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    wheel = dest / f"{stem}-{tag}.whl"
    records: list[str] = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as out:
        for file in dist.files or ():
            path = file.as_posix()
            if path.startswith("..") or "__pycache__" in path or path in skip:
                continue  # console scripts are made again from entry_points.txt
            data = Path(str(file.locate())).read_bytes()
            out.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{path},sha256={digest},{len(data)}")
        records.append(f"{info}/RECORD,,")
        out.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return wheel


@dataclass(frozen=True)
class Installed:
    work: Path
    files: dict[str, Path]  # what the package should hold (from the copied checkout)
    sdist: Path
    wheel: Path
    venv: Path

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment: the new venv's programs first, no PYTHONPATH, a cache of its own."""
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.work / "home"),
            "ISCSIBOOT_CACHE": str(self.work / "cache"),
            "LANG": "C.UTF-8",
            **extra,
        }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("packaging")
    assert not work.is_relative_to(CHECKOUT)
    source = work / "source"
    shutil.copytree(CHECKOUT, source, ignore=_ignore_top, symlinks=True)
    dist = work / "dist"
    build_sdist = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = _run([sys.executable, "-c", build_sdist, dist], cwd=source).stdout.split()[-1]
    sdist = dist / name
    wheelhouse = work / "wheelhouse"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheelhouse, sdist], cwd=work)
    (wheel,) = wheelhouse.glob("iscsiboot-*.whl")
    for dependency in DEPENDENCIES:
        _wheel_of_installed(dependency, wheelhouse)
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work)
    python = venv / "bin" / "python"
    _run(
        [*pip, "--python", python, "install", "--no-index", "--find-links", wheelhouse, wheel],
        cwd=work,
        env={**os.environ, "PYTHONPATH": ""},
    )
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    shutil.copyfile(AUDIT, site / AUDIT.name)
    (site / "audit_checkout.pth").write_text("import audit_checkout\n")
    (work / "home").mkdir()
    yield Installed(work, _package_files(source), sdist, wheel, venv)


def test_sdist_holds_what_builds_the_wheel_and_no_tests(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as archive:
        names = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name and m.isfile()}
    config = tomllib.loads((installed.work / "source" / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    sources = {str(path.relative_to(installed.work / "source")) for path in installed.files.values()}
    assert sources <= names, sorted(sources - names)
    assert {"pyproject.toml", "README.md"} <= names
    tops = {name.split("/", 1)[0] for name in names if "/" in name}
    assert tops <= {*mapping.values(), "iscsiboot.egg-info"}, tops
    assert not any(name.startswith(f"{folder}/") for name in names for folder in NOT_PACKAGED)


def test_wheel_holds_every_module_and_data_file(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        names = {n for n in archive.namelist() if not n.split("/", 1)[0].endswith(".dist-info")}
        assert names == set(installed.files), (
            f"missing {sorted(set(installed.files) - names)}, extra {sorted(names - set(installed.files))}"
        )
        changed = [n for n in sorted(names) if archive.read(n) != installed.files[n].read_bytes()]
    assert not changed, changed
    assert any(n.startswith("iscsiboot/agent/phases/") for n in names)
    assert any(not n.endswith(".py") for n in names)  # data files travel with their package


# Stand-ins are imported in the image under other names; this one refuses any import by design.
REFUSES_IMPORT = ("iscsiboot.initramfs.standins.blocked",)
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import iscsiboot
found, failed = {"iscsiboot": iscsiboot.__file__}, {}
for info in pkgutil.walk_packages(iscsiboot.__path__, "iscsiboot.", onerror=lambda name: None):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue  # runs the CLI: a program, not a module to import
    try:
        found[info.name] = importlib.import_module(info.name).__file__
    except Exception as exc:
        failed[info.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"found": found, "failed": failed, "path": sys.path}))
"""


def test_every_module_imports_from_the_new_environment(installed: Installed) -> None:
    out = _run(
        [installed.venv / "bin" / "python", "-c", IMPORT_ALL], cwd=installed.work, env=installed.env()
    ).stdout
    data = json.loads(out)
    assert not any(str(CHECKOUT) in p for p in data["path"]), data["path"]
    expected = {
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in installed.files
        if name.endswith(".py") and not name.endswith("/__main__.py")
    }
    failed = dict(data["failed"])
    for name in REFUSES_IMPORT:
        assert "not part of the iscsiboot initramfs" in failed.pop(name, "")
    assert not failed, failed
    assert set(data["found"]) | set(REFUSES_IMPORT) == expected
    venv = str(installed.venv)
    outside = {name: path for name, path in data["found"].items() if not path.startswith(venv)}
    assert not outside, outside


def test_initramfs_build_uses_the_installed_package_only(installed: Installed) -> None:
    kernel = test_kernel()
    init = installed.venv.glob("lib/python3*/site-packages/iscsiboot/agent/__init__.py")
    marked = next(init)
    marked.write_text(marked.read_text() + f"\nINSTALLED_MARK = {MARK!r}\n")
    image = installed.work / "overlay.cpio"
    log = installed.work / "audit.log"
    forbidden = os.pathsep.join(sorted({str(CHECKOUT), os.path.realpath(CHECKOUT)}))
    done = _run(
        [
            installed.venv / "bin" / "iscsiboot",
            "initramfs", "build", "--kernel-root", kernel.root, "--overlay", "--compress", "none",
            "-o", image, "--json",
        ],
        cwd=installed.work,
        env=installed.env(CHECKOUT_AUDIT=forbidden, CHECKOUT_AUDIT_LOG=str(log)),
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["warnings"] == [], report["warnings"]
    assert str(CHECKOUT) not in done.stdout + done.stderr
    assert log.is_file() and log.read_text() == "", log.read_text()[:4000]
    members = {m.entry.path: m.entry for m in cpio.read_newc(image.read_bytes())}
    assert MARK.encode() in members[AGENT_PYC].data
    assert str(CHECKOUT) not in members[MANIFEST].data.decode()
    assert any(path.startswith(f"{PHASES}/") for path in members), f"no {PHASES} in the image"
