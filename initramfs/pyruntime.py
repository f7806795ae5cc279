"""Find the Python files the agent needs, by tracing a real import under the target interpreter.

The parts of the iscsiboot package that the agent and the launchers import are
assembled into a staging folder (``core/`` as ``iscsiboot``, each other folder as
``iscsiboot.<folder>``, following the installed package's locations), then Debian's ``/usr/bin/python3.11 -S``
imports the agent's modules with that folder and the venv's site-packages on
``PYTHONPATH``.  Every module left in ``sys.modules`` with a file is part of
the runtime.  :func:`compile_many` turns source files into sourceless
``.pyc`` files whose recorded file names are their paths inside the image.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from iscsiboot.agent import layout
from iscsiboot.errors import EnvironmentProblem
from iscsiboot.proc import run

PYTHON = "/usr/bin/python3.11"  # the host's: traces, compiles, and is copied into the image
STDLIB = "/usr/lib/python3.11"  # the host's standard library
IMAGE_STDLIB = layout.STDLIB  # where the image keeps it
THIRD_PARTY = ("pyroute2", "construct")
# Imported by the interpreter on demand (codecs looked up by name), not visible to a trace.
ALWAYS = ("encodings.ascii", "encodings.latin_1", "encodings.utf_8", "encodings.aliases")
# What the launchers in the image import besides the agent's own list.
LAUNCHERS = ("iscsiboot.cli", "iscsiboot.agent.cli")
# The agent's libraries ship whole-package importable even when a phase imports them lazily.
LIBRARIES = ("construct",)
# Called before the imports, as the agent does at boot (pyroute2 without its heavy __init__).
PRELUDE: tuple[tuple[str, str], ...] = (("iscsiboot.agent.startup.pyroute", "load_pyroute2"),)

# The image's interpreter traces and compiles, without PEP 657's column ranges
# (-X no_debug_ranges): tracebacks keep their line numbers and lose only the ^^^ markers,
# and the code shrinks by about 30 % after xz (column tables compress badly).
COMPILE_FLAGS = ("-S", "-X", "no_debug_ranges")

HERE = Path(__file__).resolve().parent
TRACER = HERE / "target" / "tracer.py"
COMPILER = HERE / "target" / "compiler.py"
STANDINS = HERE / "standins"
# The module whose record() collects dataclasses' generated code during the trace.
CODECACHE = "iscsiboot.agent.startup.codecache"


@dataclass(frozen=True)
class Traced:
    """Module name -> file, for every module the trace loaded."""

    files: dict[str, str]
    failed: dict[str, str]
    version: tuple[int, int, int]
    codecache: bytes = b""  # dataclasses' generated code, compiled (iscsiboot.agent.startup.codecache)


def package_sources(modules: Iterable[str] | None = None) -> dict[str, Path]:
    """Where each part of the installed iscsiboot package that ``modules`` need lives (name -> folder).

    ``modules``: the names the trace imports (by default :func:`runtime_modules`); a part is
    ``iscsiboot`` itself (``core/``) or a sub-package named by a module's second component.
    Found through the import system, so an editable install's folders and a wheel's agree.
    """
    found: dict[str, Path] = {}
    top = importlib.util.find_spec("iscsiboot")
    if top is None or not top.submodule_search_locations:
        raise EnvironmentProblem("the iscsiboot package is not importable", fix="pip install -e .")
    found["iscsiboot"] = Path(next(iter(top.submodule_search_locations)))
    names = runtime_modules() if modules is None else modules
    for sub in sorted({name.split(".")[1] for name in names if name.startswith("iscsiboot.")}):
        spec = importlib.util.find_spec(f"iscsiboot.{sub}")
        if spec is not None and spec.submodule_search_locations:
            found[f"iscsiboot.{sub}"] = Path(next(iter(spec.submodule_search_locations)))
    return found


def site_packages() -> Path:
    """The site-packages folder that holds pyroute2 and construct."""
    for name in THIRD_PARTY:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise EnvironmentProblem(f"{name} is not installed", fix="pip install -e . (in the venv)")
    spec = importlib.util.find_spec(THIRD_PARTY[0])
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))).parent


def stage_package(dest: Path) -> Path:
    """Copy the iscsiboot package's files into ``dest/iscsiboot`` as one normal package.

    The parts the image's runtime imports (:func:`package_sources`); modules and data files
    alike (scripts the agent runs); not bytecode caches, not tests.
    """
    for package, folder in sorted(package_sources().items()):
        target = dest.joinpath(*package.split("."))
        for source in sorted(folder.rglob("*")):
            rel = source.relative_to(folder)
            if not source.is_file() or {"__pycache__", "tests"} & set(rel.parts) or source.suffix == ".pyc":
                continue
            if package == "iscsiboot" and len(rel.parts) > 1:
                continue  # core/ has no subfolders that belong to the package
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, out)
    return dest / "iscsiboot"


# Stand-ins placed first on the trace's path in lean images (``lean``, the default), from
# :data:`STANDINS`: module file in the stage -> stand-in.
# TLS: pyroute2 imports ssl only for a probe the agent never runs; asyncio needs a few names.
# pyroute2.netlink.rtnl.iprsocket makes one unittest.mock.Mock() at class definition.
LEAN: dict[str, str] = {
    "ssl.py": "tls.py",
    "unittest/__init__.py": "unittest_init.py",
    "unittest/mock.py": "unittest_mock.py",
}
# Extension modules kept out of a lean image: an import of them fails, and their users
# expect that.  hashlib falls back to the interpreter's built-in _sha*/_md5 without
# _hashlib (OpenSSL); shutil, zipfile and tarfile only lose xz and bzip2 archives without
# _lzma (liblzma) and _bz2 (libbz2), which the agent never opens.  Stand-in: blocked.py.
BLOCKED: tuple[str, ...] = ("_hashlib", "_lzma", "_bz2")
# Modules the libraries import at the top but never call on the agent's path; each pulls
# in more of the standard library (unittest: argparse, gettext; pdb: bdb, cmd, code, glob,
# pprint; multiprocessing and pickle).  Measured in a TCG guest: about 0.3 s of imports.
# name -> who imports it.  Stand-in: unused.py, which fails loudly when anything is called.
UNUSED: dict[str, str] = {
    "pdb": "construct.debug (its Debugger construct)",
    "pickle": "construct.core (its Pickled construct)",
    "multiprocessing": "pyroute2.config (for netns helpers the agent never starts)",
}


def add_lean(stage: Path) -> None:
    """Put the stand-ins (:data:`LEAN`, :data:`UNUSED`) and blockers (:data:`BLOCKED`) in ``stage``."""
    copies = [(name, STANDINS / standin) for name, standin in LEAN.items()]
    copies += [(f"{name}.py", STANDINS / "blocked.py") for name in BLOCKED]
    copies += [(f"{name}.py", STANDINS / "unused.py") for name in UNUSED]
    for name, standin in copies:
        out = stage / name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(standin, out)


# The NBD transport's side of the agent: the daemon that serves the LUN as /dev/nbdN and the
# user-space initiator it logs in with.  Packages: every module in them (found on disk).
NBD_RUNTIME: tuple[str, ...] = (
    "iscsiboot.agent.backends.nbd",
    "iscsiboot.agent.layout",
    "iscsiboot.agent.daemons",
)
NBD_PACKAGES: tuple[str, ...] = ("iscsiboot.agent.nbd", "iscsiboot.iscsi")
# The kernel transport's session keeper (a root storage daemon like the NBD server).
KEEPER_RUNTIME: tuple[str, ...] = ("iscsiboot.agent.layout", "iscsiboot.agent.daemons")
KEEPER_PACKAGES: tuple[str, ...] = ("iscsiboot.agent.keeper",)


def package_modules(package: str) -> list[str]:
    """``package`` and every module below it, or just its name when it does not exist (the trace says so)."""
    names = [package]
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:
        spec = None
    folders = list(spec.submodule_search_locations or ()) if spec is not None else []
    for info in pkgutil.iter_modules(folders, f"{package}."):
        names.extend(package_modules(info.name) if info.ispkg else [info.name])
    return names


def transport_modules(transport: str) -> tuple[str, ...]:
    """What an image for ``transport`` (auto, kernel, nbd) imports besides the agent's own list."""
    names: list[str] = []
    if transport != "nbd":
        names += KEEPER_RUNTIME
        for package in KEEPER_PACKAGES:
            names.extend(package_modules(package))
    if transport != "kernel":
        names += NBD_RUNTIME
        for package in NBD_PACKAGES:
            names.extend(package_modules(package))
    return tuple(dict.fromkeys(names))


def runtime_modules(transport: str = "auto") -> tuple[str, ...]:
    """The modules the trace imports: the agent's list (``RUNTIME_MODULES``), the transport's, launchers."""
    names: list[str] = ["iscsiboot.agent.init"]
    try:
        agent = importlib.import_module("iscsiboot.agent")
        names.extend(str(n) for n in getattr(agent, "RUNTIME_MODULES", ()))
    except ImportError:
        pass
    names.extend(transport_modules(transport))
    names.extend(LAUNCHERS)
    names.extend(LIBRARIES)
    return tuple(dict.fromkeys(names))


def trace(
    modules: Sequence[str],
    stage: Path,
    site: Path,
    *,
    python: str = PYTHON,
    prelude: Sequence[tuple[str, str]] = PRELUDE,
) -> Traced:
    """Import ``modules`` under ``python -S`` and report what got loaded."""
    if not Path(python).is_file():
        raise EnvironmentProblem(f"{python} is not installed", fix="apt-get install python3.11-minimal")
    env = {
        "PYTHONPATH": f"{stage}:{site}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/",
        "TERM": "linux",
    }
    with tempfile.TemporaryDirectory(prefix="iscsiboot-trace-") as tmp:
        cache = Path(tmp) / "codecache"
        spec = {
            "modules": list(modules),
            "prelude": [list(p) for p in prelude],
            "codecache": CODECACHE,
            "out": str(cache),
        }
        result = run(
            [python, *COMPILE_FLAGS, "-P", str(TRACER), json.dumps(spec)],
            what="trace the agent's imports",
            env=env,
            timeout=300,
        )
        codecache = cache.read_bytes() if cache.is_file() else b""
    data = json.loads(result.stdout)
    major, minor, micro = (int(x) for x in data["version"])
    return Traced(dict(data["files"]), dict(data["failed"]), (major, minor, micro), codecache)


class Kind(Enum):
    """What a runtime file is, which says how the builder packs it."""

    MODULE = "module"  # Python source, compiled to a sourceless .pyc
    EXTENSION = "extension"  # a shared object, copied (and its libraries found)
    DATA = "data"  # a file the package reads beside its modules (a script), copied


@dataclass(frozen=True)
class PyFile:
    """A Python runtime file: where it comes from and where it goes in the image."""

    archive: str  # e.g. usr/lib/python3.11/asyncio/events.pyc
    source: Path  # the .py (compiled), the extension module or the data file (copied)
    kind: Kind


# Files of a package folder that are not read at run time (type checkers' marker).
NOT_DATA = frozenset({"py.typed"})


def place(files: Iterable[str], stage: Path, site: Path, *, prefix: str = IMAGE_STDLIB) -> list[PyFile]:
    """Map traced file paths to image paths under ``prefix`` (pure apart from path arithmetic).

    The data files of the iscsiboot package (any file that is not Python, in a folder whose
    modules were traced) go along, at the same path relative to the package: a module finds
    them beside its ``__file__``.
    """
    roots = [Path(STDLIB), stage, site]
    out: dict[str, PyFile] = {}
    base = prefix.strip("/")
    folders: set[Path] = set()
    for name in files:
        path = Path(name)
        for root in roots:
            if path.is_relative_to(root):
                rel = path.relative_to(root)
                break
        else:
            continue  # outside the known roots (should not happen)
        if root == stage and rel.suffix == ".py" and rel.stem in BLOCKED and len(rel.parts) == 1:
            continue  # a blocker only shapes the trace; the image simply lacks the module
        if root == stage and rel.parts[0] == "iscsiboot":
            folders.add(path.parent)
        if path.suffix == ".py":
            archive = f"{base}/{rel.with_suffix('.pyc')}"
            out[archive] = PyFile(archive, path, Kind.MODULE)
        elif path.suffix == ".so":
            archive = f"{base}/{rel}"
            out[archive] = PyFile(archive, path, Kind.EXTENSION)
    for folder in folders:
        for data in folder.iterdir():
            if data.is_file() and data.suffix not in (".py", ".pyc", ".so") and data.name not in NOT_DATA:
                archive = f"{base}/{data.relative_to(stage)}"
                out[archive] = PyFile(archive, data, Kind.DATA)
    return [out[k] for k in sorted(out)]


# The project's own code keeps its line numbers (a traceback from the agent names the line);
# with ``optimize`` 2 the standard library's and the libraries' code is compiled without them,
# about 95 KB less after xz (their tracebacks still name the function, with line -1).
OWN_CODE = f"{IMAGE_STDLIB.strip('/')}/iscsiboot/"


def keeps_lines(archive: str, optimize: int) -> bool:
    """Whether the module packed at ``archive`` keeps its line numbers when compiled at ``optimize``."""
    return optimize == 0 or archive.startswith(OWN_CODE)


def compile_many(jobs: Sequence[tuple[Path, str]], *, optimize: int = 0, python: str = PYTHON) -> list[bytes]:
    """Sourceless .pyc files (unchecked hash) of (source, archive path) pairs, in one process.

    Each one's code objects name ``/archive`` (its place in the image); line numbers as
    :func:`keeps_lines` says.
    """
    if not jobs:
        return []
    if not Path(python).is_file():
        raise EnvironmentProblem(f"{python} is not installed", fix="apt-get install python3.11-minimal")
    with tempfile.TemporaryDirectory(prefix="iscsiboot-pyc-") as tmp:
        spec = json.dumps([[str(src), archive, keeps_lines(archive, optimize)] for src, archive in jobs])
        run(
            [python, *COMPILE_FLAGS, "-P", str(COMPILER), spec, str(optimize), tmp],
            what="compile the image's Python files",
            env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"},
            timeout=600,
        )
        return [(Path(tmp) / f"{i}.pyc").read_bytes() for i in range(len(jobs))]
