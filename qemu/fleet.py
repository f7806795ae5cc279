"""Several HTPCs, one NAS: N guests boot at the same time from one tgtd through the dnsmasq chain.

One network namespace holds the bridge (10.77.0.1), dnsmasq with the
configuration of ``iscsiboot generate dnsmasq --clients`` (a tag, a script
and a root path per client), one tgtd with a target per client (its own
disk, its own CHAP account), and a tap per guest.  Every guest has its own
MAC address; its NIC's PXE ROM asks dnsmasq, gets its own script and
sanboots its own target.

The scripts name the target ``...:htpc-@UID@`` and the initiator
``...:client-@UID@`` with LibreELEC's placeholder
(:mod:`iscsiboot.cmdline.uid`), which ``generate ipxe`` writes as iPXE's
``${netX/mac:hexraw}``: each guest's iPXE fills in its own MAC, and only
then does the target it names exist (tgt serves each under its filled-in
name).  Only the CHAP account differs from one script to the next.
Every disk's Storage is labelled ``S-<MAC without colons>``, while the
command line on each System says ``disk=LABEL=S-@UID@``: each agent must
put in its own id to find its Storage.

The test SYSTEM's ``persist`` check writes a random file to Storage and
prints its SHA-256.  Afterwards the host reads each disk's Storage (the
project's own ext4 reader, no mount) and checks that it holds exactly the
file its own guest wrote: no client mounted another's disk.

:func:`fleet_plan` is pure; :func:`run_fleet` starts and stops everything
(every path: success, failure, timeout, Ctrl-C).
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from iscsiboot.cmdline import clients as clientfile
from iscsiboot.cmdline import uid
from iscsiboot.disk.ext4 import Ext4, Ext4Error
from iscsiboot.disk.probe import read_partition_table
from iscsiboot.disk.readers import file_reader
from iscsiboot.errors import UsageError
from iscsiboot.model import DEFAULT_PORT
from iscsiboot.output import write_atomic
from iscsiboot.qemu.harness import Artifacts, build_disk, check_host
from iscsiboot.qemu.netlab import DHCP_RANGE, SERVER_ADDRESS, LabNames, NetLab
from iscsiboot.qemu.outcome import Outcome, finished, judge
from iscsiboot.qemu.runner import POLL, ConsoleFollower, Qemu
from iscsiboot.qemu.scenario import (
    BIOS_IMAGE,
    DEFAULT_INITIATOR,
    DEFAULT_TARGET,
    EFI_IMAGE,
    IPXE_DIR,
    BootVia,
    Plan,
    ScenarioOptions,
    plan,
)
from iscsiboot.qemu.system import TEST_MARKER
from iscsiboot.qemu.targets import TgtServer
from iscsiboot.qemu.tgt import Tgtd
from iscsiboot.secret import Secret, mask

MAX_CLIENTS = 8
MARKER_FILE = "/iscsiboot-persist.bin"  # the test SYSTEM's persist check, on Storage
PERSIST_TEST = "iscsiboot.test=persist"
STORAGE_PARTITION = 2
Progress = Callable[[str], None]
#: One name for every client: @UID@ is each guest's MAC without colons.
FLEET_TARGET = f"{DEFAULT_TARGET}-{uid.PLACEHOLDER}"
FLEET_INITIATOR = f"{DEFAULT_INITIATOR}-{uid.PLACEHOLDER}"
#: One Storage label in every command line (disk=LABEL=S-@UID@); each disk carries its own.
FLEET_STORAGE = f"S-{uid.PLACEHOLDER}"


@dataclass(frozen=True)
class Member:
    """One HTPC of the fleet: its line of the clients file and its scenario's plan."""

    client: clientfile.Client
    plan: Plan


@dataclass(frozen=True)
class ClientResult:
    name: str
    ok: bool  # reached SYSTEM, and its Storage holds exactly its own marker
    mounted_s: float | None  # QEMU start to the agent's Storage mount line (host clock)
    marker: str | None  # the SHA-256 the guest printed
    marker_ok: bool
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "mounted_s": None if self.mounted_s is None else round(self.mounted_s, 2),
            "marker_ok": self.marker_ok,
            "error": self.error,
        }


@dataclass(frozen=True)
class FleetResult:
    clients: tuple[ClientResult, ...]
    wall_s: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.clients)

    @property
    def median_mounted_s(self) -> float | None:
        times = [c.mounted_s for c in self.clients if c.mounted_s is not None]
        return statistics.median(times) if times else None

    def to_json(self) -> dict[str, Any]:
        median = self.median_mounted_s
        return {
            "ok": self.ok,
            "clients": [c.to_json() for c in self.clients],
            "median_mounted_s": None if median is None else round(median, 2),
            "wall_s": round(self.wall_s, 2),
        }


def client_mac(index: int) -> str:
    return f"52:54:00:00:01:{index + 1:02x}"


def client_value(value: str, index: int) -> str:
    """``value`` as client ``index`` has it: ``@UID@`` replaced by its MAC without colons."""
    return value.replace(uid.PLACEHOLDER, uid.client_uid("", client_mac(index)))


def fleet_plan(
    count: int,
    workdir: Path,
    lab: LabNames,
    *,
    kernel: Path,
    initrd: Path,
    timeout: float,
    memory_mb: int = 768,
) -> tuple[Member, ...]:
    """The N members: each its MAC, tap, target, disk and CHAP account (pure); the target and
    initiator names are written once, with ``@UID@``."""
    if not 1 <= count <= MAX_CLIENTS:
        raise UsageError(f"--clients {count}", fix=f"boot 1-{MAX_CLIENTS} clients")
    members = []
    for i in range(count):
        name = f"htpc{i + 1}"
        options = ScenarioOptions(
            boot_via=BootVia.DNSMASQ,
            target_name=FLEET_TARGET,
            initiator=FLEET_INITIATOR,
            username=name,
            password=Secret(f"{name}-secret-12"),
            mac=client_mac(i),
            extra_append=(PERSIST_TEST,),
            storage_label=FLEET_STORAGE,  # the agent replaces @UID@ in disk=
            disk_storage_label=client_value(FLEET_STORAGE, i),
            disk=workdir / name / "disk.img",
            timeout=timeout,
            memory_mb=memory_mb,
            cpus=1,
        )
        p = plan(
            options,
            port=DEFAULT_PORT,
            workdir=workdir / name,
            kernel=kernel,
            initrd=initrd,
            lab=replace(lab, tap=f"tap{i}"),
        )
        # tgt serves the target under the name this guest's iPXE fills in
        p = replace(p, target=replace(p.target, tid=i + 1, iqn=client_value(FLEET_TARGET, i)))
        member = Member(clientfile.Client(client_mac(i), name, lun=p.target.lun, target_name=FLEET_TARGET), p)
        members.append(member)
    return tuple(members)


def dnsmasq_config(members: tuple[Member, ...], lab: LabNames, tftp: Path) -> str:
    """``generate dnsmasq --clients`` for the lab's bridge."""
    return clientfile.dnsmasq(
        tuple((m.client, m.plan.client) for m in members),
        interface=lab.bridge,
        dhcp_range=DHCP_RANGE,
        tftp_root=str(tftp),
        dns=False,
    ).text


def storage_marker(image: Path) -> str | None:
    """The SHA-256 of the marker file on the Storage partition of ``image`` (None: no file)."""
    read = file_reader(image)
    table = read_partition_table(read, size=image.stat().st_size)
    part = table.partition(STORAGE_PARTITION) if table is not None else None
    if part is None:
        return None
    try:
        data = Ext4(file_reader(image, part.start, part.size)).read_file(MARKER_FILE)
    except Ext4Error:
        return None
    return hashlib.sha256(data).hexdigest()


def _printed_marker(lines: list[str]) -> str | None:
    for line in lines:
        words = line.split()
        if TEST_MARKER in words and "persist" in words:
            tail = words[words.index("persist") :]
            if len(tail) == 3 and tail[1] in ("wrote", "read"):
                return tail[2]
    return None


def _mounted_storage(line: str) -> bool:
    return "iscsiboot: mounted" in line and " on /storage" in line


def run_fleet(
    count: int, artifacts: Artifacts, *, timeout: float, progress: Progress, keep_dir: Path | None = None
) -> FleetResult:
    """Boot ``count`` clients at once and check every Storage holds only its own marker."""
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="iscsiboot-fleet-"))
    names = LabNames.fresh()
    members = fleet_plan(
        count, workdir, names, kernel=artifacts.kernel, initrd=artifacts.initrd, timeout=timeout
    )
    check_host(members[0].plan.options)
    lab = NetLab(workdir / "lab", names)
    server = TgtServer(
        workdir / "tgt",
        tgtd=Tgtd(workdir / "tgt", host=SERVER_ADDRESS, port=DEFAULT_PORT, netns=names.namespace),
    )
    machines: list[tuple[Member, Qemu, ConsoleFollower]] = []
    hidden = tuple(s for m in members for s in m.plan.secrets())
    try:
        tftp = workdir / "tftp"
        tftp.mkdir()
        for image in (BIOS_IMAGE, EFI_IMAGE):
            shutil.copyfile(IPXE_DIR / image, tftp / image)
        for m in members:
            assert m.plan.ipxe_script is not None
            # dnsmasq running as root serves only world-readable files; the work folder is 0700
            write_atomic(tftp / m.client.script, m.plan.ipxe_script, mode=0o644)
            m.plan.files.workdir.mkdir()
            progress(f"{m.client.name}: disk image, target {m.plan.target.iqn}, MAC {m.client.mac}")
            build_disk(m.plan, artifacts)
        lab.start()
        for i in range(1, count):
            lab.add_tap(f"tap{i}")
        lab.start_dnsmasq(dnsmasq_config(members, names, tftp))
        server.start()
        for i, m in enumerate(members):
            server.serve(m.plan.target, initiator=client_value(m.plan.options.initiator, i))
        progress(f"network namespace {names.namespace}: dnsmasq and one tgtd for {count} clients")
        for m in members:
            qemu = Qemu(m.plan.qemu_argv, m.plan.files.qemu_log)
            machines.append((m, qemu, ConsoleFollower(m.plan.files.console)))
        progress(f"boot {count} QEMUs at once (TCG, PXE ROM, dnsmasq, sanboot)")
        for _, qemu, _ in machines:
            qemu.start()
        started = time.monotonic()
        mounted: dict[str, float] = {}
        done: dict[str, float] = {}
        while len(done) < count and time.monotonic() - started < timeout:
            for m, qemu, follower in machines:
                if m.client.name in done:
                    continue
                for line in follower.read_new():
                    if _mounted_storage(line) and m.client.name not in mounted:
                        mounted[m.client.name] = time.monotonic() - started
                        progress(f"{m.client.name}: Storage mounted at {mounted[m.client.name]:.1f} s")
                if finished(follower.lines) or qemu.poll() is not None:
                    done[m.client.name] = time.monotonic() - started
            time.sleep(POLL)
        outcomes: list[tuple[Member, Outcome]] = []
        for m, qemu, follower in machines:
            exited = qemu.poll() is not None
            status = qemu.stop()
            follower.flush()
            elapsed = done.get(m.client.name, time.monotonic() - started)
            reason = "matched" if finished(follower.lines) else "exited" if exited else "timeout"
            outcome = judge(
                follower.lines,
                reason=reason,
                boot_seconds=elapsed,
                total_seconds=time.monotonic() - t0,
                console=mask(follower.text(), hidden),
                qemu_status=status,
            )
            outcomes.append((m, outcome))
            if keep_dir is not None:
                keep_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(keep_dir / f"{m.client.name}.console.log", outcome.console + "\n")
    finally:
        for _, qemu, _ in machines:
            qemu.stop()
        server.stop()
        lab.stop()
    try:
        results = []
        markers = {m.client.name: storage_marker(m.plan.target.image) for m, _ in outcomes}
        for m, outcome in outcomes:
            printed = _printed_marker(outcome.console.splitlines())
            on_disk = markers[m.client.name]
            others = {v for k, v in markers.items() if k != m.client.name}
            marker_ok = printed is not None and on_disk == printed and printed not in others
            error = None if outcome.ok else f"{outcome.phase}: {outcome.error}"
            if outcome.ok and not marker_ok:
                error = f"Storage holds {on_disk or 'no marker'}, the guest wrote {printed or 'none'}"
            results.append(
                ClientResult(
                    m.client.name,
                    outcome.ok and marker_ok,
                    mounted.get(m.client.name),
                    printed,
                    marker_ok,
                    error,
                )
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return FleetResult(tuple(results), time.monotonic() - t0)


def text_report(result: FleetResult) -> str:
    lines = []
    for c in result.clients:
        at = "-" if c.mounted_s is None else f"{c.mounted_s:.1f} s"
        verdict = "ok" if c.ok else f"FAILED ({c.error})"
        lines.append(f"{c.name}: {verdict}; Storage mounted at {at}; own marker only: {c.marker_ok}")
    median = result.median_mounted_s
    lines.append(f"median time to Storage mounted: {'-' if median is None else f'{median:.1f} s'}")
    lines.append(
        f"fleet: {'all clients booted their own disk' if result.ok else 'FAILED'} ({result.wall_s:.1f} s)"
    )
    return "\n".join(lines) + "\n"
