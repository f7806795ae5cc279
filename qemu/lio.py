"""The Linux kernel's iSCSI target (LIO) in a small target VM, set up through configfs.

Synology, QNAP and TrueNAS SCALE serve iSCSI with LIO.  This machine's own
kernel has no target modules, so LIO runs in a guest: Debian's kernel (the
one the scenarios boot) with ``configfs``, ``target_core_mod``,
``target_core_file`` and ``iscsi_target_mod``, and an initramfs of busybox,
those modules and two shipped scripts: ``lio-init.sh`` (PID 1) and
``lio-configfs.sh``, which sets LIO up through configfs the way rtslib does,
without targetcli (it serves the VM's block device as a fileio LUN 0 with a
per-initiator ACL, CHAP and mutual CHAP).

How the client guest reaches it: through the host.  The target VM's user-mode
network forwards 127.0.0.1:``port`` to its 3260 (``hostfwd``), and the client
reaches that port at 10.0.2.2 exactly as it reaches tgtd and istgt.  So the
client's side of a scenario (iPXE, the iBFT, the command line, the agent's
DHCP) is the same for all three targets and needs no second NIC, no static
addresses and no link between the guests; the target VM's network is
``restrict=on``, so it reaches nothing but what the host forwards to it.
What it costs: the target sees every initiator at 10.0.2.2, and a dead
target VM looks to the client like a clean close (a cable pull would need a
private link between the guests).

The disk image is the VM's virtio disk (``/dev/vda``) for the VM's whole
life; :meth:`LioVm.serve` changes the target, its ACL and CHAP through the
second serial port (a socket on the host), so one VM serves many scenarios.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from iscsiboot.errors import BootFailure, EnvironmentProblem, UsageError
from iscsiboot.initramfs.cpio import Entry, write_newc
from iscsiboot.initramfs.kernel import KernelTree, fetch_kernel
from iscsiboot.output import write_atomic
from iscsiboot.proc import which
from iscsiboot.qemu.runner import ConsoleFollower, Qemu
from iscsiboot.qemu.scripts import script
from iscsiboot.qemu.system import _busybox
from iscsiboot.qemu.targets import TargetKind, chap_of
from iscsiboot.qemu.tgt import free_tcp_port

if TYPE_CHECKING:
    from iscsiboot.qemu.scenario import TargetSpec

# The target VM's modules, in the order they are asked for (their dependencies come first).
MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "crc32c_generic",  # iscsi_target_mod asks for crc32c at every login (digests)
    "configfs",
    "target_core_mod",
    "target_core_file",
    "iscsi_target_mod",
)
DEVICE = "vda"
ADDRESS = "10.0.2.15/24"  # the address QEMU's user network forwards to
GATEWAY = "10.0.2.2"
ISCSI_PORT = 3260
READY = "LIO-READY"
DONE = "LIO-DONE"
MEMORY_MB = 192
START_TIMEOUT = 180.0  # TCG, and a client VM may be booting beside it
REQUEST_TIMEOUT = 60.0
EMPTY_WORD = "-"


def module_order(dep_text: str, wanted: Iterable[str]) -> list[str]:
    """The module files (paths relative to the modules folder) to load for ``wanted``, in order.

    ``dep_text`` is ``modules.dep``: each line names a module and the modules
    it needs, the last of them to be loaded first.
    """
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in dep_text.splitlines():
        path, sep, rest = line.partition(":")
        if not sep:
            continue
        name = Path(path).name.split(".ko", 1)[0].replace("-", "_")
        deps[name] = (path, rest.split())
    order: list[str] = []
    for module in wanted:
        key = module.replace("-", "_")
        if key not in deps:
            raise EnvironmentProblem(
                f"the kernel has no module {module}",
                fix="use Debian's kernel (the target modules are modules there)",
            )
        path, needs = deps[key]
        for need in [*reversed(needs), path]:
            if need not in order:
                order.append(need)
    return order


def initramfs(tree: KernelTree) -> bytes:
    """busybox, the modules of :data:`MODULES`, ``/init`` and ``/lio-configfs.sh`` as newc."""
    order = module_order((tree.modules / "modules.dep").read_text(), MODULES)
    init = script("lio-init.sh", ADDRESS=ADDRESS, GATEWAY=GATEWAY, DEVICE=DEVICE, READY=READY, DONE=DONE)
    entries = [
        *(Entry.directory(d) for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "tmp")),
        Entry.char("dev/console", 5, 1),
        Entry.file("bin/busybox", _busybox().read_bytes(), 0o755),
        Entry.symlink("bin/sh", "busybox"),
        Entry.file("init", init.encode(), 0o755),
        Entry.file("lio-configfs.sh", script("lio-configfs.sh").encode(), 0o755),
        Entry.file("modules.order", "".join(Path(p).name + "\n" for p in order).encode()),
        *(Entry.file(f"lib/modules/{Path(p).name}", (tree.modules / p).read_bytes()) for p in order),
    ]
    return write_newc(entries)


def vm_argv(
    *, qemu: str, kernel: Path, initrd: Path, image: Path, console: Path, control: Path, port: int
) -> tuple[str, ...]:
    """The target VM's command line: serial 0 the console file, serial 1 the request socket."""
    return (
        qemu,
        *("-machine", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", str(MEMORY_MB)),
        *("-display", "none", "-monitor", "none", "-no-reboot"),
        *("-chardev", f"file,id=c0,path={console}", "-serial", "chardev:c0"),
        *("-chardev", f"socket,id=c1,path={control},server=on,wait=off", "-serial", "chardev:c1"),
        *("-kernel", str(kernel), "-initrd", str(initrd), "-append", "console=ttyS0 panic=1 quiet"),
        *("-drive", f"file={image},format=raw,if=virtio,cache=writeback"),
        "-netdev",
        f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:{ISCSI_PORT}",
        *("-device", "virtio-net-pci,netdev=n0"),
    )


def encode_request(words: Sequence[str]) -> bytes:
    """One request line: each word base64 (so a secret may hold any character), an empty one ``-``."""
    coded = [base64.b64encode(w.encode()).decode() if w else EMPTY_WORD for w in words]
    return (" ".join(coded) + "\n").encode()


def serve_words(spec: TargetSpec, initiator: str) -> list[str]:
    """The arguments of ``lio-configfs.sh serve`` for ``spec``."""
    words = ["serve", f"/dev/{DEVICE}", spec.iqn, initiator]
    chap = chap_of(spec, outgoing=False)
    mutual = chap_of(spec, outgoing=True)
    if chap is not None:
        words += [chap.username, chap.password.reveal()]
        if mutual is not None:
            words += [mutual.username, mutual.password.reveal()]
    return words


class LioVm:
    """The target VM: started once, it serves one spec after another; a context manager."""

    kind = TargetKind.LIO

    def __init__(
        self, workdir: Path, *, image: Path, port: int | None = None, tree: KernelTree | None = None
    ) -> None:
        self.workdir = Path(workdir)
        self.image = Path(image)
        self._port = port or 0
        self._tree = tree
        self._qemu: Qemu | None = None
        self._follower: ConsoleFollower | None = None
        self._sockdir: Path | None = None
        self._sock: socket.socket | None = None
        self.start_seconds = 0.0  # QEMU start to the VM's ready line

    @property
    def port(self) -> int:
        return self._port

    @property
    def console_path(self) -> Path:
        return self.workdir / "lio-console.log"

    @property
    def running(self) -> bool:
        return self._qemu is not None and self._qemu.poll() is None

    def start(self) -> None:
        if self._qemu is not None:
            return
        qemu = which("qemu-system-x86_64", hint="install qemu-system-x86")
        if not self.image.is_file():
            raise UsageError(
                f"the LIO target VM's disk {self.image} does not exist", fix="build the disk first"
            )
        tree = self._tree or fetch_kernel()
        self.workdir.mkdir(parents=True, exist_ok=True)
        initrd = self.workdir / "lio-initrd.img"
        write_atomic(initrd, initramfs(tree))
        if not self._port:
            self._port = free_tcp_port()
        self._sockdir = Path(tempfile.mkdtemp(prefix="iscsiboot-lio-"))  # a socket path must be short
        control = self._sockdir / "control"
        argv = vm_argv(
            qemu=qemu,
            kernel=tree.vmlinuz,
            initrd=initrd,
            image=self.image.resolve(),
            console=self.console_path,
            control=control,
            port=self._port,
        )
        self.console_path.unlink(missing_ok=True)  # a ready line of an earlier VM must not count
        self._qemu = Qemu(argv, self.workdir / "lio-qemu.log")
        self._follower = ConsoleFollower(self.console_path)
        self._qemu.start()
        try:
            self._wait_ready()
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.connect(str(control))
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._qemu is not None and self._follower is not None
        deadline = self._qemu.started + START_TIMEOUT
        while True:
            self._follower.read_new()
            if any(line.startswith(READY) for line in self._follower.lines):
                self.start_seconds = time.monotonic() - self._qemu.started
                return
            if self._qemu.poll() is not None:
                raise BootFailure(
                    f"the LIO target VM stopped (status {self._qemu.poll()}) before it was ready",
                    fix=f"see {self.console_path} and {self._qemu.stderr_path}",
                )
            if time.monotonic() > deadline:
                raise BootFailure(
                    f"the LIO target VM was not ready within {START_TIMEOUT:.0f} s",
                    fix=f"see {self.console_path}",
                )
            time.sleep(0.1)

    def request(self, words: Sequence[str]) -> None:
        """Run ``lio-configfs.sh WORDS`` in the VM; BootFailure unless it exits 0."""
        self.start()
        sock = self._sock
        assert sock is not None
        sock.settimeout(REQUEST_TIMEOUT)
        sock.sendall(encode_request(words))
        answer = b""
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while (DONE.encode() + b" ") not in answer or not answer.endswith(b"\n"):
            if time.monotonic() > deadline:
                raise BootFailure(f"the LIO target VM did not answer within {REQUEST_TIMEOUT:.0f} s")
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                raise BootFailure("the LIO target VM closed its request port", fix=f"see {self.console_path}")
            answer += chunk
        status = answer.split(DONE.encode() + b" ", 1)[1].split(b"\n", 1)[0].strip().decode(errors="replace")
        if status != "0":
            raise BootFailure(
                f"lio-configfs.sh {words[0]} exited with status {status} in the LIO target VM",
                fix=f"see {self.console_path}",
            )

    def serve(self, spec: TargetSpec, *, initiator: str) -> None:
        """Serve the VM's disk as ``spec`` (its name, ACL for ``initiator``, CHAP) at LUN 0."""
        if spec.image.resolve() != self.image.resolve():
            raise UsageError(
                f"the LIO target VM serves {self.image}, not {spec.image}", fix="start a VM with that disk"
            )
        self.request(serve_words(spec, initiator))

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        if self._qemu is not None:
            self._qemu.stop()
            self._qemu = None
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    def log_text(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> LioVm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
