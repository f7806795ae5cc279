"""The test SYSTEM: a small squashfs root whose init reports and powers off.

OpenELEC boots a squashfs file named ``SYSTEM`` from the System partition.
The test stand-in holds ``busybox-static`` and one init script, installed at
every path a boot agent may start (``/sbin/init``, ``/init``,
``/usr/lib/systemd/systemd``).  The script prints :data:`SYSTEM_MARKER`, the
mount table between :data:`MOUNTS_BEGIN` and :data:`MOUNTS_END`, then powers
the machine off.  :func:`parse_report` reads that report back from a console
log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.errors import EnvironmentProblem
from iscsiboot.proc import run, which
from iscsiboot.qemu.scripts import script

SYSTEM_MARKER = "ISCSIBOOT-SYSTEM-REACHED"
MOUNTS_BEGIN = "ISCSIBOOT-SYSTEM-MOUNTS-BEGIN"
MOUNTS_END = "ISCSIBOOT-SYSTEM-MOUNTS-END"
TEST_MARKER = "ISCSIBOOT-SYSTEM-TEST"  # one line per check asked for with iscsiboot.test=NAME
FILLER = "usr/share/iscsiboot-test/filler.bin"  # incompressible bytes that make SYSTEM large
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
INIT_PATHS = ("sbin/init", "init", "usr/lib/systemd/systemd")
DIRS = (
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/lib/systemd",
    "dev",
    "proc",
    "sys",
    "tmp",
    "run",
    "flash",
    "storage",
    "mnt",
    "var",
    "etc",
)

INIT_SCRIPT = script(
    "system-init.sh",
    SYSTEM_MARKER=SYSTEM_MARKER,
    MOUNTS_BEGIN=MOUNTS_BEGIN,
    MOUNTS_END=MOUNTS_END,
    TEST_MARKER=TEST_MARKER,
)


@dataclass(frozen=True)
class Mount:
    device: str
    mountpoint: str
    fstype: str


@dataclass(frozen=True)
class SystemReport:
    """What the test SYSTEM printed: that it ran, and its mount table."""

    reached: bool
    mounts: tuple[Mount, ...]

    def mounted_at(self, mountpoint: str) -> Mount | None:
        for m in self.mounts:
            if m.mountpoint == mountpoint:
                return m
        return None


def parse_report(console: str) -> SystemReport:
    """Find the SYSTEM's report in a console log (pure)."""
    lines = [line.strip("\r") for line in console.splitlines()]
    reached = any(SYSTEM_MARKER in line for line in lines)
    mounts: list[Mount] = []
    inside = False
    for line in lines:
        if MOUNTS_BEGIN in line:
            inside = True
            mounts = []
            continue
        if MOUNTS_END in line:
            inside = False
            continue
        if inside:
            fields = line.split()
            if len(fields) >= 3:
                mounts.append(Mount(fields[0], fields[1], fields[2]))
    return SystemReport(reached, tuple(mounts))


def parse_tests(console: str) -> dict[str, list[str]]:
    """The check lines of the test SYSTEM: check name -> its words, in the order printed (pure)."""
    out: dict[str, list[str]] = {}
    for line in console.splitlines():
        at = line.find(TEST_MARKER + " ")
        if at < 0:
            continue
        words = line[at + len(TEST_MARKER) + 1 :].split()
        if words:
            out.setdefault(words[0], []).append(" ".join(words[1:]))
    return out


def filler(size_mb: int) -> bytes:
    """``size_mb`` MiB of incompressible bytes, the same on every run (a cached SYSTEM stays valid)."""
    return hashlib.shake_256(b"iscsiboot test SYSTEM filler").digest(size_mb * 1024 * 1024)


def _busybox() -> Path:
    for path in BUSYBOX_PATHS:
        if Path(path).is_file():
            out = run([path], what="check busybox", check=False)
            if "BusyBox" in out.stdout + out.stderr:
                return Path(path)
    raise EnvironmentProblem("busybox not found", fix="install busybox-static")


def system_key(filler_mb: int = 0) -> str:
    """A cache key that changes when the script, busybox or the filler's size changes."""
    digest = hashlib.sha256(INIT_SCRIPT.encode())
    digest.update(_busybox().read_bytes())
    digest.update(str(filler_mb).encode())
    return digest.hexdigest()[:16]


def build_system(dest: Path, *, filler_mb: int = 0) -> Path:
    """Write the squashfs SYSTEM image to ``dest`` (atomically) and return it.

    ``filler_mb`` adds that many MiB of incompressible bytes (:data:`FILLER`):
    a SYSTEM as large as a real one, for reads through the transport.
    """
    mksquashfs = which("mksquashfs", hint="install squashfs-tools")
    busybox = _busybox()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="iscsiboot-system-", dir=dest.parent) as tmp:
        root = Path(tmp) / "root"
        for d in DIRS:
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        os.chmod(root / "bin" / "busybox", 0o755)
        for applet in ("sh", "mount", "cat", "poweroff", "sync", "sleep", "echo", "ls"):
            (root / "bin" / applet).symlink_to("busybox")
        for init in INIT_PATHS:
            path = root / init
            path.write_text(INIT_SCRIPT)
            os.chmod(path, 0o755)
        (root / "etc" / "os-release").write_text('NAME="iscsiboot test SYSTEM"\nID=iscsiboot-test\n')
        if filler_mb:
            (root / FILLER).parent.mkdir(parents=True, exist_ok=True)
            (root / FILLER).write_bytes(filler(filler_mb))
        image = Path(tmp) / "SYSTEM"
        run(
            [mksquashfs, str(root), str(image), "-noappend", "-all-root", "-comp", "gzip", "-quiet"],
            what="build the test SYSTEM squashfs",
        )
        os.replace(image, dest)
    return dest


def cached_system(cache: Path, *, filler_mb: int = 0) -> Path:
    """The SYSTEM image in ``cache``, built once per script/busybox version (and filler size)."""
    dest = cache / f"SYSTEM-{system_key(filler_mb)}"
    if not dest.is_file():
        build_system(dest, filler_mb=filler_mb)
    return dest
