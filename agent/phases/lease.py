# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""DHCP leases without pyroute2: busybox udhcpc's side, and the firmware lease's renewal in the background.

udhcpc runs a report script (:data:`UDHCPC_SCRIPT`) that prints one
``LEASE|...`` line (:func:`parse_udhcpc`); :mod:`.network` uses it when asked to
(``iscsiboot.dhcp=udhcpc``) or when pyroute2's client is missing.

:class:`Renewal`: the network phase sets the firmware's DHCP lease at once
(:mod:`.netlight`); meanwhile the lease is renewed, asking the server for the same
address, while the login and mounts go on.  busybox udhcpc does it where there
is one (a C client: it takes a slow guest's CPU from the login for a few
milliseconds, where importing pyroute2's client takes most of a second), else
pyroute2's client in a thread (:func:`.network.renew`).  The run's end reads
how it went (:meth:`Renewal.outcome`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass

from iscsiboot.agent.errors import PhaseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    import threading
    from typing import Any

    from iscsiboot.agent.plan import NetPlan

# udhcpc runs this script (a data file beside this module, packed into the image with it).
UDHCPC_SCRIPT = os.path.join(os.path.dirname(__file__), "udhcpc.sh")


@dataclass(frozen=True)
class DhcpLease:
    address: str
    prefix: int
    gateway: str | None
    dns: tuple[str, ...]
    server: str | None
    root_path: str | None
    client: str


def udhcpc_argv(interface: str, seconds: float) -> list[str]:
    """udhcpc's argument list; the last item is the shell for the report script (replaced by -s)."""
    from iscsiboot.proc import find

    busybox = find("busybox")
    udhcpc = find("udhcpc")
    if udhcpc:
        program = [udhcpc]
    elif busybox:
        program = [busybox, "udhcpc"]
    else:
        raise PhaseError(
            "network",
            "no DHCP client: pyroute2's client is missing and there is no udhcpc",
            cause="missing-tool",
            fix="add pyroute2 (with pyroute2.dhcp) or busybox to the initramfs",
        )
    tries = max(1, int(seconds))
    shell = f"{busybox} sh" if busybox else "/bin/sh"
    return [
        *program, "-i", interface, "-f", "-q", "-n", "-t", str(tries), "-T", "1",
        "-O", "rootpath", "-V", "iscsiboot", shell,
    ]  # fmt: skip


def udhcpc_script(shell: str) -> str:
    """The report script udhcpc runs (:data:`UDHCPC_SCRIPT`), started by ``shell``."""
    from iscsiboot.template import fill

    with open(UDHCPC_SCRIPT) as handle:
        return fill(handle.read(), {"SHELL": shell})


def write_script(argv: list[str], prefix: str) -> tuple[str, list[str]]:
    """The report script in a new private folder (under ``$TMPDIR`` or ``/tmp``) for ``argv``
    (:func:`udhcpc_argv`'s): the folder, and the argument list with ``-s SCRIPT`` in place of
    its last item.  :func:`remove_script` removes them."""
    from iscsiboot.output import new_folder

    folder = new_folder(os.environ.get("TMPDIR") or "/tmp", prefix)
    script = os.path.join(folder, "script")
    try:
        with open(script, "w") as handle:
            handle.write(udhcpc_script(argv[-1]))
        os.chmod(script, 0o700)
    except BaseException:
        remove_script(folder)
        raise
    return folder, [*argv[:-1], "-s", script]


def remove_script(folder: str) -> None:
    """Remove the folder of :func:`write_script` and its script (whatever is left of them)."""
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(folder, "script"))
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def parse_udhcpc(line: str) -> DhcpLease | None:
    """The lease of a ``LEASE|ip|mask|routers|dns|server|rootpath`` line from the report script."""
    if not line.startswith("LEASE|"):
        return None
    fields = line.split("|")[1:]
    if len(fields) < 6 or not fields[0]:
        return None
    ip, mask, routers, dns, server, root_path = fields[:6]
    try:
        ipaddress.IPv4Address(ip)
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask or '24'}").prefixlen
    except ValueError:
        return None
    return DhcpLease(
        address=ip,
        prefix=prefix,
        gateway=routers.split()[0] if routers.split() else None,
        dns=tuple(dns.split()),
        server=server or None,
        root_path=root_path or None,
        client="udhcpc",
    )


def lease_dict(lease: DhcpLease) -> dict[str, Any]:
    """JSON-ready fields of ``lease``."""
    return {**vars(lease), "dns": list(lease.dns)}


class Renewal:
    """The firmware lease's renewal, under way in the background (:meth:`start`)."""

    def __init__(self, plan: NetPlan, device: str, seconds: float, *, dhcp_client: str = "pyroute2") -> None:
        self.plan = plan
        self.device = device
        self.seconds = seconds
        self.dhcp_client = dhcp_client
        self.proc: subprocess.Popen[bytes] | None = None
        self.script_dir: str | None = None
        self.thread: threading.Thread | None = None
        self.done: tuple[dict[str, Any] | None, str | None] | None = None
        self.output: list[str] = []
        self.eof = False  # udhcpc closed its output

    def start(self) -> Renewal:
        """udhcpc asking for the firmware's address (``-r``), else pyroute2's client in a thread."""
        try:
            argv = udhcpc_argv(self.device, self.seconds)
        except PhaseError:
            return self._start_thread()
        import subprocess

        self.script_dir, argv = write_script(argv, "iscsiboot-renewal.")
        argv = [*argv[:-2], "-r", str(self.plan.address), *argv[-2:]]
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError:
            self._clean()
            return self._start_thread()
        return self

    def _start_thread(self) -> Renewal:
        import threading

        def renew() -> None:
            from iscsiboot.agent.deadline import Deadline
            from iscsiboot.agent.phases.network import renew

            try:
                lease = renew(self.plan, self.device, Deadline(self.seconds), dhcp_client="pyroute2")
            except PhaseError as exc:
                self.done = (None, exc.what)
            except Exception as exc:
                self.done = (None, f"internal error {type(exc).__name__}: {exc}")
            else:
                self.done = (lease_dict(lease), None)

        self.thread = threading.Thread(target=renew, name="renewal", daemon=True)
        self.thread.start()
        return self

    def outcome(self, seconds: float) -> tuple[dict[str, Any] | None, str | None]:
        """(the renewed lease's fields, None) or (None, what went wrong); waits at most ``seconds``.

        Nothing of the renewal runs afterwards.
        """
        if self.thread is not None:
            self.thread.join(seconds)
            return self.done or (None, f"no answer within {seconds:g} s")
        if self.proc is None:
            return None, "not started"
        running = True
        try:
            found = self._read(seconds)
        finally:
            if self.eof:  # it closed its output: it is exiting
                with contextlib.suppress(Exception):  # subprocess.TimeoutExpired
                    self.proc.wait(1.0)
            running = self.proc.poll() is None
            if running:
                self.proc.kill()
            self.proc.wait()
            self._clean()
        if found is not None:
            return lease_dict(found), None
        if running:
            return None, f"no answer within {seconds:g} s"
        return None, f"no lease from udhcpc ({self.output[-1] if self.output else 'no output'})"

    def _read(self, seconds: float) -> DhcpLease | None:
        """udhcpc's lease line, read for at most ``seconds``."""
        import select
        import time

        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        until = time.monotonic() + max(0.0, seconds)
        pending = b""
        while True:
            left = until - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                self.eof = True
                return None
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").strip()
                self.output.append(line)
                found = parse_udhcpc(line)
                if found is not None:
                    return found

    def _clean(self) -> None:
        if self.script_dir is not None:
            remove_script(self.script_dir)
            self.script_dir = None
