"""A network namespace of its own for a guest whose boot settings come from a real DHCP server.

QEMU's user-mode network has a DHCP server of its own, which cannot send the
root path (option 17).  :class:`NetLab` builds instead, inside a new network
namespace: a bridge with the server's address, the guest's tap device on it,
and ``dnsmasq`` serving the configuration that ``iscsiboot generate dnsmasq``
writes.  The target (a :class:`~iscsiboot.qemu.tgt.Tgtd` with ``netns=``) and
QEMU (:func:`exec_prefix`) run in the same namespace, so every address stays
inside it.  :meth:`NetLab.stop` ends dnsmasq and deletes the namespace (its
devices go with it); it runs on every path, failures included.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from iscsiboot.errors import BootFailure, EnvironmentProblem
from iscsiboot.proc import run, which

SERVER_ADDRESS = "10.77.0.1"  # the bridge: dnsmasq and the target
PREFIX = 24
DHCP_RANGE = "10.77.0.100,10.77.0.150,1h"
BRIDGE = "br0"
TAP = "tap0"  # names inside the namespace only: no clash with the host's
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class LabNames:
    """The namespace and the devices of one lab (pure: the plan names them before they exist)."""

    namespace: str
    bridge: str = BRIDGE
    tap: str = TAP

    @classmethod
    def fresh(cls) -> LabNames:
        return cls(f"iscsiboot-{os.getpid()}-{secrets.token_hex(3)}")


def exec_prefix(namespace: str) -> tuple[str, ...]:
    """The argv prefix that runs a program inside ``namespace``."""
    return ("ip", "netns", "exec", namespace)


def listening(pid: int, port: int, *, udp: bool = False) -> bool:
    """Whether a socket listens on ``port`` (TCP, or bound for ``udp``) in the network namespace
    that process ``pid`` entered (False while it is still in this process's namespace)."""
    try:
        if os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            return False
    except OSError:
        return False
    wanted = f":{port:04X}"
    for table in ("udp", "udp6") if udp else ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) > 3 and fields[1].endswith(wanted) and (udp or fields[3] == "0A"):
                        return True
        except OSError:
            continue
    return False


class NetLab:
    """The namespace, its bridge and tap, and dnsmasq; a context manager whose exit undoes it all."""

    def __init__(self, workdir: Path, names: LabNames) -> None:
        self.workdir = Path(workdir)
        self.names = names
        self.log_path = self.workdir / "dnsmasq.log"
        self._created = False
        self._dnsmasq: subprocess.Popen[bytes] | None = None

    @staticmethod
    def check_host() -> None:
        """Raise EnvironmentProblem when this host cannot build a lab."""
        which("ip", hint="install iproute2")
        which("dnsmasq", hint="install dnsmasq-base")
        if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            raise EnvironmentProblem("QEMU's tap device needs /dev/net/tun", fix="load the tun module")

    def _ip(self, *args: str) -> None:
        run(["ip", "-n", self.names.namespace, *args], what=f"ip {' '.join(args)}", timeout=30)

    def start(self) -> None:
        """The namespace with the bridge (the server's address) and the guest's tap on it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        run(["ip", "netns", "add", self.names.namespace], what="create a network namespace", timeout=30)
        self._created = True
        try:
            bridge, tap = self.names.bridge, self.names.tap
            self._ip("link", "set", "lo", "up")
            self._ip("link", "add", bridge, "type", "bridge")
            self._ip("tuntap", "add", "dev", tap, "mode", "tap")
            self._ip("link", "set", tap, "master", bridge)
            self._ip("addr", "add", f"{SERVER_ADDRESS}/{PREFIX}", "dev", bridge)
            for device in (bridge, tap):
                self._ip("link", "set", device, "up")
        except BaseException:
            self.stop()
            raise

    def add_tap(self, name: str) -> None:
        """One more guest's tap device on the bridge (several guests in one lab)."""
        self._ip("tuntap", "add", "dev", name, "mode", "tap")
        self._ip("link", "set", name, "master", self.names.bridge)
        self._ip("link", "set", name, "up")

    def start_dnsmasq(self, config: str) -> None:
        """dnsmasq with ``config`` in the namespace, in the foreground of its own process."""
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text(config)
        argv = [
            *exec_prefix(self.names.namespace), which("dnsmasq", hint="install dnsmasq-base"),
            "--keep-in-foreground", f"--conf-file={conf}", f"--pid-file={self.workdir / 'dnsmasq.pid'}",
            f"--dhcp-leasefile={self.workdir / 'leases'}", "--user=root", "--group=root", "--no-ping",
            "--log-dhcp", f"--log-facility={self.log_path}",
        ]  # fmt: skip
        self._dnsmasq = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not listening(self._dnsmasq.pid, 67, udp=True):
            if self._dnsmasq.poll() is not None:
                error = self._dnsmasq.stderr.read().decode(errors="replace") if self._dnsmasq.stderr else ""
                raise BootFailure(
                    f"dnsmasq exited with status {self._dnsmasq.returncode}: {error.strip()}",
                    fix=f"see {self.log_path}",
                )
            if time.monotonic() > deadline:
                raise BootFailure(f"dnsmasq did not serve DHCP within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def dhcp_log(self) -> str:
        """What dnsmasq logged (its DHCP exchanges), for a failure's report."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """End dnsmasq and delete the namespace; idempotent."""
        proc = self._dnsmasq
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_TIMEOUT)
            if proc.stderr is not None:
                proc.stderr.close()
            self._dnsmasq = None
        if self._created:
            run(["ip", "netns", "del", self.names.namespace], what="delete a network namespace", check=False)
            self._created = False

    def __enter__(self) -> NetLab:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
