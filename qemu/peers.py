"""The distributions' own initramfs generators as benchmark peers of the boot agent.

Two images that Debian's packages build for an iSCSI root, each with its own tool,
for the benchmark's kernel (the project's cached Debian kernel and its modules):

* ``initramfs-tools``: ``mkinitramfs`` with open-iscsi's hook (Debian's defaults:
  ``MODULES=most``, ``BUSYBOX=auto``, ``COMPRESS=zstd``), booted with ``iscsi_auto``
  (``iscsistart -N`` and ``iscsistart -b`` from the iBFT);
* ``dracut``: ``dracut --no-hostonly`` with its ``network-legacy`` and ``iscsi`` modules
  (zstd), booted with ``rd.iscsi.firmware=1 rd.neednet=1 ip=ibft``.

Both tools read the kernel's modules from ``/lib/modules/<version>`` (and
``mkinitramfs`` its config from ``/boot/config-<version>``), where this host has
nothing.  They run in a private mount namespace (``unshare --mount``) in which an
overlay over ``/usr/lib`` carries a bind mount of the cached module tree and the
kernel package's ``boot/`` is bound on ``/boot``: the host itself is never changed,
and the namespace ends with the tool.

Both peers mount the System partition as their root; the milestone is the kernel's
``EXT4-fs (sdX): mounted filesystem`` line (:func:`root_mounted`).  The partition
holds no init, so each then gives up its way (initramfs-tools panics, dracut's
emergency action reboots) and, with ``panic=1`` and QEMU's ``-no-reboot``, the
machine ends.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.errors import EnvironmentProblem
from iscsiboot.initramfs.kernel import KernelTree
from iscsiboot.proc import run, which

INITRAMFS_TOOLS = "initramfs-tools"
DRACUT = "dracut"
NAMES = (INITRAMFS_TOOLS, DRACUT)
# Debian 12's /etc/initramfs-tools/initramfs.conf, written out so that a changed host file changes nothing
INITRAMFS_CONF = """\
MODULES=most
BUSYBOX=auto
KEYMAP=n
COMPRESS=zstd
DEVICE=
NFSROOT=auto
RUNSIZE=10%
FSTYPE=auto
"""
# Debian's dracut 059 needs two things beside its modules for an iBFT boot:
# open-iscsi's iscsid.service runs /lib/open-iscsi/startup-checks.sh first, which
# the iscsi module does not install; and ibft_to_cmdline calls awk's and(),
# which mawk lacks (gawk must be the host's awk: tools/system-packages.txt).
DRACUT_ARGS = (
    "--force",
    "--no-hostonly",
    "--compress",
    "zstd",
    "--add",
    "network-legacy iscsi",
    "--install",
    "/lib/open-iscsi/startup-checks.sh",
)
PACKAGES = {
    INITRAMFS_TOOLS: ("initramfs-tools-core", "open-iscsi", "busybox-static", "klibc-utils", "udev"),
    DRACUT: ("dracut-core", "dracut-network", "open-iscsi", "systemd", "udev", "gawk"),
}
TOOLS = {INITRAMFS_TOOLS: "mkinitramfs", DRACUT: "dracut"}
SCRIPT_DIRS = ("init-top", "init-premount", "init-bottom", "local-top", "local-premount", "local-bottom")
_ROOT_MOUNTED = re.compile(r"^EXT4-fs \((sd[a-z]+\d*)\): mounted filesystem")
_STAMP = re.compile(r"\[\s*(\d+\.\d+)\]\s")

# Run inside `unshare --mount --propagation private`: $1 overlay folder, $2 kernel version,
# $3 the cached module tree, $4 the kernel package's boot/ folder, then the tool's argv.
NAMESPACE_SCRIPT = """\
set -e
lib=$(readlink -f /lib)
mount -t overlay peer-lib -o "lowerdir=$lib,upperdir=$1/upper,workdir=$1/work" "$lib"
mkdir -p "$lib/modules/$2"
mount --bind "$3" "$lib/modules/$2"
mount --bind "$4" /boot
shift 4
exec "$@"
"""


@dataclass(frozen=True)
class Peer:
    """One distribution's initramfs: its name and the kernel command line words it boots with."""

    name: str

    def append(self, system_label: str = "System") -> tuple[str, ...]:
        """Words added after the scenario's own (a later ``boot=`` wins in initramfs-tools)."""
        root = (f"root=LABEL={system_label}", "rootfstype=ext4")
        if self.name == INITRAMFS_TOOLS:
            return ("boot=local", *root, "iscsi_auto")
        return (*root, "rd.iscsi.firmware=1", "rd.neednet=1", "ip=ibft", "rd.shell=0", "rd.emergency=reboot")


PEERS = tuple(Peer(name) for name in NAMES)


# ------------------------------------------------------------------ pure parts


def root_mounted(lines: Sequence[str]) -> float | None:
    """Kernel seconds of the first mount of an iSCSI disk's ext4 (the peer's root), or None."""
    for line in lines:
        found = list(_STAMP.finditer(line))
        if found and _ROOT_MOUNTED.match(line[found[-1].end() :]):
            return float(found[-1].group(1))
    return None


def failure_reason(lines: Sequence[str], reason: str) -> str:
    """One line on why a peer's boot did not mount its root (``reason``: how QEMU ended)."""
    hints = (
        ("Kernel panic", "kernel panic"),
        ("Failed to start", "a unit failed"),
        ("Gave up waiting", "gave up waiting for the root device"),
        ("No init found", "no init"),
        ("ALERT!", "root device not found"),
        ("Could not boot", "could not boot"),
    )
    seen: list[str] = []
    for line in lines:
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line)
        for needle, _ in hints:
            if needle in text:
                seen.append(_STAMP.sub("", text).strip()[:120])
                break
    last = f": {seen[-1]}" if seen else ""
    return f"root not mounted (QEMU {reason}){last}"


# ------------------------------------------------------------------ building


def _versions(packages: Sequence[str]) -> str:
    out = run(
        ["dpkg-query", "-W", "-f", "${Package}=${Version}\\n", *packages],
        what="read the peers' package versions",
        check=False,
    )
    return out.stdout


def check_tool(name: str) -> str:
    """The generator's path; EnvironmentProblem when it or a helper is missing."""
    package = "initramfs-tools" if name == INITRAMFS_TOOLS else "dracut-core dracut-network"
    tool = which(TOOLS[name], hint=f"install {package}")
    which("unshare", hint="install util-linux")
    if name == INITRAMFS_TOOLS and not Path("/usr/share/initramfs-tools/hooks/iscsi").is_file():
        raise EnvironmentProblem("open-iscsi's initramfs-tools hook is missing", fix="install open-iscsi")
    if name == DRACUT:
        for path, pkg in (("/lib/open-iscsi/startup-checks.sh", "open-iscsi"), ("/usr/bin/gawk", "gawk")):
            if not Path(path).exists():
                raise EnvironmentProblem(f"{path} is missing (dracut's iBFT boot)", fix=f"install {pkg}")
    if not Path("/boot").is_dir():
        raise EnvironmentProblem("/boot is missing (the namespace binds the kernel's config there)")
    return tool


def tool_argv(name: str, kernel: KernelTree, output: Path, workdir: Path) -> list[str]:
    """The generator's command line (``workdir``: where initramfs-tools' config folder goes)."""
    if name == INITRAMFS_TOOLS:
        conf = workdir / "initramfs-tools"
        for sub in ("conf.d", "hooks", *(f"scripts/{s}" for s in SCRIPT_DIRS)):
            (conf / sub).mkdir(parents=True, exist_ok=True)
        (conf / "initramfs.conf").write_text(INITRAMFS_CONF)
        (conf / "modules").write_text("")
        return [TOOLS[name], "-d", str(conf), "-o", str(output), kernel.version]
    return [TOOLS[name], *DRACUT_ARGS, "--kver", kernel.version, str(output)]


def image_key(name: str, kernel: KernelTree) -> str:
    """Changes with the tool's and its helpers' package versions, its settings and the kernel."""
    digest = hashlib.sha256(_versions(PACKAGES[name]).encode())
    digest.update(f"{name} {kernel.version} {INITRAMFS_CONF} {DRACUT_ARGS}".encode())
    digest.update(NAMESPACE_SCRIPT.encode())
    return digest.hexdigest()[:16]


def _kernel_boot_dir(kernel: KernelTree) -> Path:
    boot = kernel.vmlinuz.parent
    if not (boot / f"config-{kernel.version}").is_file():
        raise EnvironmentProblem(f"{boot} holds no config-{kernel.version}", fix="fetch the kernel again")
    return boot


def build_peer(name: str, kernel: KernelTree, cache: Path, *, timeout: float = 1200.0) -> Path:
    """The peer's image for ``kernel``, built once per key into ``cache`` and reused."""
    dest = cache / f"peer-{name}-{kernel.version}-{image_key(name, kernel)}.img"
    if dest.is_file():
        return dest
    check_tool(name)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"iscsiboot-peer-{name}-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        overlay = work / "overlay"
        (overlay / "upper").mkdir(parents=True)
        (overlay / "work").mkdir()
        output = work / "image"
        argv = [
            which("unshare"), "--mount", "--propagation", "private", "--",
            "sh", "-c", NAMESPACE_SCRIPT, "peer-namespace",
            str(overlay), kernel.version, str(kernel.modules), str(_kernel_boot_dir(kernel)),
            *tool_argv(name, kernel, output, work),
        ]  # fmt: skip
        run(argv, what=f"build the {name} image", timeout=timeout)
        if not output.is_file() or output.stat().st_size == 0:
            raise EnvironmentProblem(f"{TOOLS[name]} wrote no image")
        tmp_dest = dest.with_suffix(".part")
        shutil.move(str(output), tmp_dest)
        tmp_dest.chmod(0o644)
        tmp_dest.replace(dest)
    return dest
