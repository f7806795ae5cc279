# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Runs the phases in order, each timed and with its own deadline, and reports the outcome.

The boot is a table (:data:`PHASE_TABLE`): each phase takes the typed
results of the phases before it (:mod:`iscsiboot.agent.results`) and returns
its own, frozen.  :func:`run_phases` runs any such table with a state it
threads through; :class:`Agent` wires the eight phases to the system.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from iscsiboot.agent import PHASES
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.options import AgentOptions
from iscsiboot.agent.report import Reporter, RunResult, SessionInfo
from iscsiboot.agent.results import (
    ConfigResult,
    DiskResult,
    HandoffResult,
    LabelResult,
    LoginsResult,
    ModulesResult,
    MountResult,
    NetworkResult,
    Results,
)
from iscsiboot.agent.transport import MODULES, Transport
from iscsiboot.errors import IscsibootError
from iscsiboot.model import Target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from iscsiboot.agent.backends.nbd import NbdDisk
    from iscsiboot.agent.backends.result import LoginBackend
    from iscsiboot.agent.keeper.launch import Pending
    from iscsiboot.agent.netup import NetworkUp
    from iscsiboot.agent.phases.modules import Loader
    from iscsiboot.agent.plan import NetPlan
    from iscsiboot.agent.startup.early import Early

S = TypeVar("S")
EXPLAIN_TIMEOUT = 5.0  # seconds for each target's diagnosis after a failed login
RENEWAL_WAIT = 2.0  # seconds the end of a run waits for the firmware lease's renewal (it ran meanwhile)
OnBreak = Callable[[str], bool]  # True: continue after the break, False: stop here


@dataclass(frozen=True)
class Step(Generic[S]):
    """One named step of a run: the state so far in, the state with its result out."""

    name: str
    run: Callable[[S, Deadline], S]


def run_phases(
    steps: Sequence[Step[S]],
    state: S,
    options: AgentOptions,
    reporter: Reporter,
    *,
    on_break: OnBreak = lambda _phase: False,
    cleanup: Callable[[S], None] = lambda _state: None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[RunResult, S]:
    """Run ``steps`` from ``state``; on the first failure undo (``cleanup``) and describe it."""
    result = RunResult()
    started = clock()
    for step in steps:
        name = step.name
        result.phase = name
        if name in options.breaks and not on_break(name):
            result.error = f"stopped before the {name} phase (break={name})"
            result.cause = "break"
            cleanup(state)
            result.total = clock() - started
            return result, state
        if options.progress:
            reporter.line(f"### {name} ###")
        deadline = Deadline(options.timeout(name), clock)
        try:
            state = step.run(state, deadline)
        except PhaseError as exc:
            _fail(result, exc)
        except IscsibootError as exc:
            _fail(result, PhaseError(name, exc.what, cause="error", evidence=exc.where, fix=exc.fix))
        except Exception as exc:
            _fail(
                result,
                PhaseError(
                    name,
                    f"internal error {type(exc).__name__}: {exc}",
                    cause="internal",
                    fix="report this with the output of a run with debugging",
                ),
            )
        finally:
            result.timeline[name] = clock() - deadline.start
        if result.error is not None:
            try:
                cleanup(state)
            finally:
                result.total = clock() - started
            return result, state
        reporter.debug(f"{name} done in {result.timeline[name]:.2f} s")
    result.ok = True
    result.phase = "done"
    result.total = clock() - started
    return result, state


def _fail(result: RunResult, exc: PhaseError) -> None:
    result.phase = exc.phase
    result.error = exc.what
    result.cause = exc.cause
    result.evidence = exc.evidence
    result.fix = exc.fix


T = TypeVar("T")


def need(value: T | None, phase: str) -> T:
    """The result of ``phase``, which the table runs before the phase asking for it.

    A miss is a bug in the table: :func:`run_phases` reports it as an internal
    error of the phase that asked (not of an unrelated one).
    """
    if value is None:
        raise RuntimeError(f"the {phase} phase has not run")
    return value


@dataclass
class Env:
    """Where the agent finds the system (tests point these at scratch trees)."""

    sysfs: str = "/sys"
    proc: str = "/proc"
    dev: str = "/dev"
    root: str = "/"
    moddir: str | None = None  # default /lib/modules/$(uname -r)
    resolv_conf: str | None = None


@dataclass
class Agent:
    """The eight phases wired to the system; each phase's typed result feeds the later ones."""

    text: str
    options: AgentOptions
    reporter: Reporter
    env: Env = field(default_factory=Env)
    last: str = "handoff"  # the last phase to run ("label" in hook mode)
    early: Early | None = None  # PID 1's start-up work (module index, drivers, links), if any
    network_up: NetworkUp | None = None  # None: chosen from the options when the run starts
    result: RunResult | None = None
    results: Results = field(default_factory=Results)
    backend: str | None = None  # the login backend that ran (also when the login failed)
    _loader: Loader | None = None
    _transport: Transport | None = None
    _keeper: Pending | None = None  # the session keeper, started at the login, until the handoff
    _warnings: list[str] = field(default_factory=list)  # the run's own (the firmware lease's renewal)

    # ----------------------------------------------------------------- helpers
    def say(self, text: str) -> None:
        self.reporter.line(text)

    def loader(self) -> Loader:
        if self._loader is None:
            if self.early is not None:
                self._loader = self.early.loader
            else:
                from iscsiboot.agent import sysc
                from iscsiboot.agent.phases.modules import Loader

                moddir = self.env.moddir or f"/lib/modules/{os.uname().release}"
                self._loader = Loader(moddir, sysc.finit_module, sysfs=self.env.sysfs, proc=self.env.proc)
        return self._loader

    def transport(self) -> Transport:
        """How the LUN reaches the kernel: chosen once, from the option and what the kernel and image have."""
        if self._transport is None:
            self._transport = self.loader().transport(self.options.transport)
        return self._transport

    def net(self) -> NetworkUp:
        """How the network comes up: chosen once, from the options."""
        if self.network_up is None:
            from iscsiboot.agent.netup import choose

            self.network_up = choose(self.options, resolv_conf=self.env.resolv_conf)
        return self.network_up

    # ----------------------------------------------------------------- phases
    def config(self, deadline: Deadline) -> ConfigResult:
        from iscsiboot.agent.phases.config import load_config, read_firmware_from
        from iscsiboot.model import BootConfig

        source: list[str] = []  # where the iBFT was read

        def firmware() -> BootConfig:
            if self.transport() is Transport.KERNEL:  # else read from ACPI or the memory scan
                try:
                    self.loader().ensure("iscsi_ibft")
                except PhaseError as exc:
                    self.reporter.debug(f"iscsi_ibft: {exc.what}")
            model, where = read_firmware_from()
            source.append(where)
            return model

        cfg, warnings = load_config(self.text, firmware=firmware)
        self.reporter.add_secrets(cfg.secrets())
        for warning in warnings:
            self.reporter.line(f"warning: {warning}")
        return ConfigResult(cfg, tuple(warnings), source[0] if source else None)

    def modules(self, config: ConfigResult, deadline: Deadline) -> ModulesResult:
        from iscsiboot.agent.netup import direct
        from iscsiboot.agent.phases.modules import Background
        from iscsiboot.agent.plan import needed_modules
        from iscsiboot.model import NetMode

        loader = self.loader()
        early = self.early
        plan = self.net_plan(config)
        if not direct(plan):  # pyroute2 brings it up: imported ahead of the network phase
            self.net().start_imports(plan.mode is not NetMode.STATIC)
        if early is None:
            nics = loader.load_nic_drivers(deadline)
        else:  # PID 1 started the drivers, the links and the imports before the config phase
            early.wait_nics(deadline.remaining())
            nics = [*early.nics, *loader.load_nic_drivers(deadline)]
            self.reporter.debug(f"start-up: {early.timeline()}")
            for problem in early.problems:
                self.reporter.debug(f"start-up: {problem}")
        first, rest = needed_modules(config.config, tuple(nics), self.transport())
        for name in first:
            loader.ensure(name)
        self.reporter.debug(f"network modules: {', '.join(first) or 'none needed'}")
        after = early.kernel if early is not None else None
        done = ModulesResult(tuple(nics), Background(loader, rest, after=after).start())
        if self.last == "modules":  # no later phase waits for them: the run ends with them loaded
            self._modules_ready(done, deadline)
        return done

    def net_plan(self, config: ConfigResult) -> NetPlan:
        """The network plan: the firmware's DHCP lease is kept unless the boot needs a lease of its own."""
        from iscsiboot.agent.plan import net_plan

        return net_plan(config.config.network, firmware_lease=not config.config.target_from_dhcp)

    def network(self, config: ConfigResult, deadline: Deadline) -> NetworkResult:
        try:
            net = self.net().bring_up(
                self.net_plan(config),
                deadline,
                self.say,
                debug=self.reporter.debug,
                while_waiting=self._prefetch_login,
            )
        except PhaseError as exc:
            if exc.cause == "no-interface":
                from iscsiboot.agent.phases.modules import driverless_nics

                unclaimed = driverless_nics(self.env.sysfs)
                if unclaimed:
                    exc.evidence = (
                        f"{exc.evidence}; no driver claimed PCI network device {', '.join(unclaimed)}"
                    )
                    exc.fix = (
                        "build the initramfs with that NIC's driver (iscsiboot initramfs build "
                        "--module NAME) or append the overlay to an initramfs that has it"
                    )
            raise
        vlan = f" (VLAN {net.vlan} on {net.parent})" if net.vlan is not None else ""
        self.say(
            f"network: {net.device}{vlan} {net.address}/{net.prefix}"
            f" via {net.gateway or 'no gateway'} ({net.mode})"
        )
        return NetworkResult(net)

    def _prefetch_login(self) -> None:
        """Import the later phases while the network worker brings the network up."""
        try:
            import iscsiboot.agent.phases.disk
            import iscsiboot.agent.phases.label
            import iscsiboot.agent.phases.login
            import iscsiboot.agent.phases.mount
            import iscsiboot.proc  # subprocess, for e2fsck in the mount phase

            if self.transport() is Transport.NBD:
                import iscsiboot.agent.backends.nbd
            elif self.options.login_backend == "native":
                import iscsiboot.agent.backends.kernel  # noqa: F401
        except ImportError as exc:  # the phase that needs it reports
            self.reporter.debug(f"prefetch: {exc}")

    def _modules_ready(
        self, modules: ModulesResult, deadline: Deadline, names: tuple[str, ...] | None = None
    ) -> None:
        """Wait for ``names`` of the modules phase's background loads (None: all of them)."""
        background = modules.background
        if background is None:
            return
        if names is None:
            background.wait(deadline)
        else:
            background.ensure_now(names, deadline)

    def login(
        self, config: ConfigResult, modules: ModulesResult, network: NetworkResult, deadline: Deadline
    ) -> LoginsResult:
        from iscsiboot.agent.phases.config import target_from_lease
        from iscsiboot.agent.phases.login import login_all, make_backend
        from iscsiboot.agent.plan import login_targets

        # ext4 may still be loading meanwhile
        self._modules_ready(modules, deadline, MODULES[self.transport()].login)
        cfg = config.config
        if cfg.target_from_dhcp:  # netroot=dhcp: the target is the lease's root path (option 17)
            cfg = target_from_lease(cfg, network.net, self.reporter.add_secrets)
        backend = make_backend(
            self.options.login_backend,
            self.reporter.debug,
            transport=self.transport(),
            recovery_timeout=self.options.session_timeout(),
            ping=self._ping(),
        )
        self.backend = backend.name
        try:
            done = login_all(
                backend, login_targets(cfg), cfg.initiator, deadline, firmware=cfg.firmware, say=self.say
            )
        except PhaseError as exc:
            if exc.cause not in ("config", "missing-tool"):
                diagnosis = self._explain_login(login_targets(cfg), cfg.initiator)
                if diagnosis:
                    exc.evidence = f"{exc.evidence}. {diagnosis}" if exc.evidence else diagnosis
            raise
        for target, res in done:
            self.say(f"logged in to {target.name if target else 'the iBFT targets'} ({res.cause.value})")
        kept = tuple(getattr(backend, "kept", ()))  # the native backend's sessions
        if kept and self.options.keeper and self.last == "handoff":
            self._spawn_keeper()
        self.net().start_background()  # the firmware lease's renewal: runs while the kernel scans the LUNs
        return LoginsResult(backend.name, tuple(done), self._served(backend), kept)

    def _spawn_keeper(self) -> None:
        """Exec the session keeper now: it starts while the disk, label and mount phases run."""
        from iscsiboot.agent.keeper.launch import spawn_keeper

        try:
            self._keeper = spawn_keeper()
        except OSError as exc:
            self.say(
                f"warning: no session keeper ({exc.strerror or exc}): a lost connection is not recovered"
            )

    def _ping(self) -> int:
        """The NOP-Out interval for the kernel sessions: on only when a keeper will recover them."""
        if self.options.keeper and self.transport() is Transport.KERNEL:
            from iscsiboot.agent.keeper.config import PING

            return PING
        return 0

    def _served(self, backend: LoginBackend) -> tuple[NbdDisk, ...]:
        """The devices the NBD backend's daemons serve (an image for kernel iSCSI has no NBD code)."""
        if self.transport() is not Transport.NBD:
            return ()
        from iscsiboot.agent.backends.nbd import NbdBackend

        return backend.disks if isinstance(backend, NbdBackend) else ()

    def _explain_login(self, targets: Sequence[Target], initiator: str | None) -> str | None:
        """Ask the target itself why the login failed (a test login of our own, random ISID).

        The network is up at this point, so the doctor's checks can name the
        cause the target gave (ACL, CHAP account, target name).  A diagnosis
        that fails itself must never hide the original error.
        """
        if initiator is None or not targets:
            return None
        self.say("login failed: asking the target why")
        try:
            from iscsiboot.doctor.checks import explain_login

            return " ".join(explain_login(t, initiator, timeout=EXPLAIN_TIMEOUT) for t in targets[:2])
        except Exception as exc:  # the diagnosis is a bonus, the login error stands
            self.reporter.debug(f"diagnosis failed: {type(exc).__name__}")
            return None

    def disk(
        self, config: ConfigResult, logins: LoginsResult, modules: ModulesResult, deadline: Deadline
    ) -> DiskResult:
        from iscsiboot.agent.phases.disk import Uevents, list_sessions, wait_for_disks

        self._modules_ready(modules, deadline, MODULES[self.transport()].disk)
        if logins.nbd:
            return self._nbd_disks(logins, deadline)
        logged = logins.targets()
        # one login per target, but boot= and disk= may name different LUNs of it
        wanted = (
            list(dict.fromkeys((t.name, t.lun) for t in config.config.targets if t.name in logged)) or None
        )
        events = Uevents()
        try:
            disks = wait_for_disks(
                wanted, deadline, sysfs=self.env.sysfs, dev=self.env.dev, wait=events.wait, say=self.say
            )
        finally:
            events.close()
        sessions = tuple(SessionInfo(s.sid, s.target) for s in list_sessions(self.env.sysfs))
        return DiskResult(tuple(disks), sessions)

    def _nbd_disks(self, logins: LoginsResult, deadline: Deadline) -> DiskResult:
        """The devices the NBD daemons serve, once the kernel shows their size and partitions."""
        from iscsiboot.agent.phases.disk import ScsiDisk, Uevents, wait_for_nbd_disks

        served = [
            ScsiDisk(os.path.basename(d.device), "nbd", d.lun, f"nbd daemon {d.pid}", d.target)
            for d in logins.nbd
            if d.device is not None
        ]
        events = Uevents()
        try:
            disks = wait_for_nbd_disks(
                served, deadline, sysfs=self.env.sysfs, dev=self.env.dev, wait=events.wait, say=self.say
            )
        finally:
            events.close()
        return DiskResult(tuple(disks), tuple(SessionInfo(d.name, d.target) for d in served))

    def label(self, config: ConfigResult, disk: DiskResult, deadline: Deadline) -> LabelResult:
        from iscsiboot.agent.phases.label import Candidate, candidates_of_disk, resolve
        from iscsiboot.agent.plan import locators
        from iscsiboot.disk.readers import file_reader

        cands: list[Candidate] = []
        for ready in disk.disks:
            node = f"{self.env.dev}/{ready.disk.name}"
            cands.extend(
                candidates_of_disk(
                    ready.disk.name, ready.size, file_reader(node), ready.partitions, self.env.dev
                )
            )
        system_loc, storage_loc = locators(config.config)
        system = resolve("System", system_loc, cands)
        storage = resolve("Storage", storage_loc, cands) if storage_loc is not None else None
        if storage is not None and storage.device == system.device:
            raise PhaseError(
                "label",
                f"System and Storage are the same file system ({system.device})",
                cause="ambiguous",
                fix="give Storage its own partition and label (disk=LABEL=Storage)",
            )
        self.say(
            f"System is {system.device} ({system.fs})"
            + (f", Storage is {storage.device} ({storage.fs})" if storage else ", no Storage")
        )
        return LabelResult(system, storage)

    def mount(self, label: LabelResult, modules: ModulesResult, deadline: Deadline) -> MountResult:
        from iscsiboot.agent.phases.mount import Mounter
        from iscsiboot.agent.plan import FS_MODULES, mount_plan
        from iscsiboot.proc import which

        self._modules_ready(modules, deadline)  # all of them: the file systems and loop
        system, storage = label.system, label.storage
        if system.fs is None:
            raise PhaseError("mount", f"no known file system on {system.device}", cause="unknown-fs")
        try:
            fsck: str | None = which("e2fsck")
        except IscsibootError:
            fsck = None

        def ensure_fs(fs: str) -> None:
            try:
                with open(f"{self.env.proc}/filesystems") as handle:
                    if any(line.split()[-1] == fs for line in handle if line.strip()):
                        return
            except OSError:
                pass
            self.loader().ensure(FS_MODULES.get(fs, fs))

        mounter = Mounter(root=self.env.root, dev=self.env.dev, say=self.say, fsck=fsck, ensure_fs=ensure_fs)
        steps = mount_plan(
            system.device, system.fs, storage.device if storage else None,
            storage.fs if storage else None, self.options.sysroot,
        )  # fmt: skip
        return MountResult(tuple(mounter.run(steps, deadline)), mounter)

    def handoff(
        self,
        network: NetworkResult | None,
        deadline: Deadline,
        logins: LoginsResult | None = None,
        label: LabelResult | None = None,
    ) -> HandoffResult:
        from iscsiboot.agent.phases.handoff import choose_init, write_markers

        sysroot = os.path.join(self.env.root, self.options.sysroot.lstrip("/"))
        init = choose_init(sysroot, self.options.init)
        for path in ("flash", "storage"):
            if not os.path.isdir(os.path.join(sysroot, path)):
                raise PhaseError(
                    "handoff",
                    f"the SYSTEM image has no /{path} directory",
                    cause="no-mountpoint",
                    fix="use an OpenELEC/LibreELEC SYSTEM image (it has /flash and /storage)",
                )
        write_markers(self.env.dev, network.net.to_dict() if network else None)
        if logins is not None and logins.kept and self.options.keeper:
            self._keep(logins, label)
        return HandoffResult(init)

    def _keep(self, logins: LoginsResult, label: LabelResult | None) -> None:
        """Start the session keeper for the kernel sessions (a failure is said, the boot goes on)."""
        from iscsiboot.agent.keeper.config import PING, KeeperConfig
        from iscsiboot.agent.keeper.launch import KeeperFailed

        volumes = []
        if label is not None:
            volumes.append(("System", label.system.device))
            if label.storage is not None:
                volumes.append(("Storage", label.storage.device))
        config = KeeperConfig(logins.kept, self.options.session_timeout(), PING, tuple(volumes))
        pending, self._keeper = self._keeper, None
        if pending is None:
            return  # it could not be started (said at the login)
        try:
            started = pending.finish(config)
        except (KeeperFailed, OSError) as exc:
            self.say(f"warning: no session keeper ({exc}): a lost connection is not recovered")
            return
        sessions = " ".join(f"session{s.sid}" for s in logins.kept)
        self.say(f"keeper: pid {started.pid} keeps {sessions} ({started.resident_kib} KiB resident)")

    # ----------------------------------------------------------------- running
    def steps(self) -> list[Step[Results]]:
        table = PHASE_TABLE[: PHASES.index(self.last) + 1]
        return [Step(phase.name, _bound(self, phase)) for phase in table]

    def cleanup(self, results: Results | None = None) -> None:
        """Stop the network worker and undo the mounts (a run that failed, or a failed switch_root)."""
        done = results if results is not None else self.results
        if self.network_up is not None:
            self.network_up.stop()
        if self.early is not None and self.early.worker is not None:
            self.early.worker.stop()  # the start-up child of a run that ended before the modules phase
        if done.mount is not None:
            done.mount.mounter.rollback()
        if self._keeper is not None:  # started at the login, never handed its sessions
            self._keeper.abandon()
            self._keeper = None

    def run(self, on_break: OnBreak = lambda _p: False) -> RunResult:
        for warning in self.options.warnings:
            self.reporter.line(f"warning: {warning}")
        self.net()
        result, self.results = run_phases(
            self.steps(), Results(), self.options, self.reporter, on_break=on_break, cleanup=self.cleanup
        )
        if result.ok:
            self._renewal()
        self.fill(result)
        self.result = result
        return result

    def _renewal(self) -> None:
        """How the renewal of the firmware's DHCP lease went (it ran while the later phases did)."""
        done = self.results.network
        outcome = self.network_up.renewal(RENEWAL_WAIT) if self.network_up is not None else None
        if outcome is None or done is None:
            return
        net = done.net
        lease, problem = outcome
        if lease is None:
            net.renewal = problem or "no lease"
            self._warnings.append(
                f"the firmware's DHCP lease of {net.address} was not renewed: {net.renewal}"
            )
        elif lease.get("address") != net.address:
            net.renewal = f"the DHCP server leases {lease.get('address')}"
            self._warnings.append(
                f"the DHCP server now leases {lease.get('address')}, not the firmware's {net.address}:"
                f" {net.device} keeps {net.address} for this boot"
            )
        else:
            net.renewal = "renewed"
            net.server = lease.get("server") or net.server
            server = net.server or "unknown"
            self.reporter.debug(
                f"network: DHCP renewed the firmware's lease of {net.address} (server {server})"
            )
            return
        self.reporter.line(f"warning: {self._warnings[-1]}")

    def fill(self, result: RunResult) -> None:
        done = self.results
        result.warnings = [
            *self.options.warnings,
            *(done.config.warnings if done.config else ()),
            *self._warnings,
        ]
        result.system = done.label.system.device if done.label else None
        result.storage = done.label.storage.device if done.label and done.label.storage else None
        result.network = done.network.net if done.network else None
        result.sessions = list(done.disk.sessions) if done.disk else []
        result.backend = done.login.backend if done.login else self.backend
        result.transport = self._transport.value if self._transport is not None else None
        result.ibft = done.config.ibft if done.config else None
        if done.mount is not None:
            result.mounts = [
                f"{source} on {target} ({'rw' if rw else 'ro'})" for target, source, rw in done.mount.mounts
            ]
        if result.ok and self.last != "handoff":
            result.phase = "done"

    def hook_values(self, result: RunResult) -> dict[str, str | None]:
        net = result.network
        return {
            "ISCSIBOOT_OK": "1" if result.ok else "0",
            "ISCSIBOOT_PHASE": result.phase,
            "ISCSIBOOT_ERROR": result.error,
            "ISCSIBOOT_FIX": result.fix,
            "ISCSIBOOT_SYSTEM": result.system,
            "ISCSIBOOT_STORAGE": result.storage,
            "ISCSIBOOT_IFACE": net.device if net else None,
            "ISCSIBOOT_ADDRESS": net.address if net else None,
            "ISCSIBOOT_PREFIX": str(net.prefix) if net and net.prefix is not None else None,
            "ISCSIBOOT_GATEWAY": net.gateway if net else None,
            "ISCSIBOOT_DNS": " ".join(net.dns) if net else "",
            "ISCSIBOOT_SESSIONS": " ".join(s.target for s in result.sessions),
            "ISCSIBOOT_MOUNTS": "; ".join(result.mounts),
        }


@dataclass(frozen=True)
class Phase:
    """One row of the boot table: the phase's name and how it is called with the results before it."""

    name: str
    run: Callable[[Agent, Results, Deadline], Results]


# The boot, in order: each phase's inputs are the typed results of earlier phases.
PHASE_TABLE: tuple[Phase, ...] = (
    Phase("config", lambda a, r, d: replace(r, config=a.config(d))),
    Phase("modules", lambda a, r, d: replace(r, modules=a.modules(need(r.config, "config"), d))),
    Phase("network", lambda a, r, d: replace(r, network=a.network(need(r.config, "config"), d))),
    Phase(
        "login",
        lambda a, r, d: replace(
            r,
            login=a.login(
                need(r.config, "config"), need(r.modules, "modules"), need(r.network, "network"), d
            ),
        ),
    ),
    Phase(
        "disk",
        lambda a, r, d: replace(
            r,
            disk=a.disk(need(r.config, "config"), need(r.login, "login"), need(r.modules, "modules"), d),
        ),
    ),
    Phase(
        "label", lambda a, r, d: replace(r, label=a.label(need(r.config, "config"), need(r.disk, "disk"), d))
    ),
    Phase(
        "mount",
        lambda a, r, d: replace(r, mount=a.mount(need(r.label, "label"), need(r.modules, "modules"), d)),
    ),
    Phase("handoff", lambda a, r, d: replace(r, handoff=a.handoff(r.network, d, r.login, r.label))),
)


def _bound(agent: Agent, phase: Phase) -> Callable[[Results, Deadline], Results]:
    def run(results: Results, deadline: Deadline) -> Results:
        return phase.run(agent, results, deadline)

    return run
