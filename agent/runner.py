# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Runs the phases in order, each timed and with its own deadline, and reports the outcome."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from iscsiboot.agent import DISK_MODULES, LOGIN_MODULES, PHASES
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.options import AgentOptions
from iscsiboot.agent.report import Reporter, RunResult
from iscsiboot.errors import IscsibootError
from iscsiboot.model import Target

Step = Callable[[Deadline], None]
EXPLAIN_TIMEOUT = 5.0  # seconds for each target's diagnosis after a failed login
OnBreak = Callable[[str], bool]  # True: continue after the break, False: stop here


class Stopped(Exception):
    """A ``break=<phase>`` ended the run."""


def run_phases(
    steps: Sequence[tuple[str, Step]],
    options: AgentOptions,
    reporter: Reporter,
    *,
    on_break: OnBreak = lambda _phase: False,
    cleanup: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
) -> RunResult:
    """Run ``steps``; on the first failure undo (``cleanup``) and describe it."""
    result = RunResult()
    started = clock()
    for name, step in steps:
        result.phase = name
        if name in options.breaks and not on_break(name):
            result.error = f"stopped before the {name} phase (break={name})"
            result.cause = "break"
            cleanup()
            result.total = clock() - started
            return result
        if options.progress:
            reporter.line(f"### {name} ###")
        deadline = Deadline(options.timeout(name), clock)
        try:
            step(deadline)
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
                cleanup()
            finally:
                result.total = clock() - started
            return result
        reporter.debug(f"{name} done in {result.timeline[name]:.2f} s")
    result.ok = True
    result.phase = "done"
    result.total = clock() - started
    return result


def _fail(result: RunResult, exc: PhaseError) -> None:
    result.phase = exc.phase
    result.error = exc.what
    result.cause = exc.cause
    result.evidence = exc.evidence
    result.fix = exc.fix


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
    """The eight phases wired to the system; state passes from phase to phase."""

    text: str
    options: AgentOptions
    reporter: Reporter
    env: Env = field(default_factory=Env)
    last: str = "handoff"  # the last phase to run ("label" in hook mode)
    result: RunResult | None = None
    state: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- helpers
    def say(self, text: str) -> None:
        self.reporter.line(text)

    def _loader(self) -> Any:
        if "loader" not in self.state:
            from iscsiboot.agent import sysc
            from iscsiboot.agent.phases.modules import Loader

            moddir = self.env.moddir or f"/lib/modules/{os.uname().release}"
            self.state["loader"] = Loader(moddir, sysc.finit_module, sysfs=self.env.sysfs, proc=self.env.proc)
        return self.state["loader"]

    # ----------------------------------------------------------------- phases
    def config(self, deadline: Deadline) -> None:
        from iscsiboot.agent.phases.config import load_config

        def firmware() -> Any:
            from iscsiboot.agent.phases.config import _firmware

            try:
                self._loader().ensure("iscsi_ibft")
            except PhaseError as exc:
                self.reporter.debug(f"iscsi_ibft: {exc.what}")
            return _firmware()

        cfg, warnings = load_config(self.text, firmware=firmware)
        self.reporter.add_secrets(cfg.secrets())
        self.state["config"] = cfg
        self.state["warnings"] = warnings
        for warning in warnings:
            self.reporter.line(f"warning: {warning}")

    def modules(self, deadline: Deadline) -> None:
        import threading

        from iscsiboot.agent.phases.modules import Background
        from iscsiboot.agent.plan import needed_modules
        from iscsiboot.model import NetMode

        loader = self._loader()
        early = self.state.get("early")
        if early is None:
            from iscsiboot.agent.phases.network import prefetch

            dhcp = self.state["config"].network.mode is not NetMode.STATIC
            imports = threading.Thread(target=prefetch, args=(dhcp,), name="prefetch", daemon=True)
            imports.start()
            self.state["prefetch"] = imports
            nics = loader.load_nic_drivers(deadline)
        else:  # PID 1 started the drivers, the links and the imports before the config phase
            self.state["prefetch"] = early.imports
            early.wait_nics(deadline.remaining())
            nics = [*early.nics, *loader.load_nic_drivers(deadline)]
            self.reporter.debug(f"start-up: {early.timeline()}")
            for problem in early.problems:
                self.reporter.debug(f"start-up: {problem}")
        first, rest = needed_modules(self.state["config"], tuple(nics))
        for name in first:
            loader.ensure(name)
        self.reporter.debug(f"network modules: {', '.join(first) or 'none needed'}")
        after = early.kernel if early is not None else None
        self.state["background"] = Background(loader, rest, after=after).start()
        if self.last == "modules":  # no later phase waits for them: the run ends with them loaded
            self._modules_ready(deadline)

    def network(self, deadline: Deadline) -> None:
        try:
            self._network(deadline)
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

    def _network(self, deadline: Deadline) -> None:
        from iscsiboot.agent.plan import net_plan

        plan = net_plan(self.state["config"].network)
        early = self.state.get("early")
        worker = getattr(early, "worker", None)
        net = None
        if worker is not None and self.options.network_worker:
            from iscsiboot.agent.startup.netproc import WorkerGone

            try:
                net = worker.bring_up(
                    plan,
                    deadline,
                    self.say,
                    resolv_conf=self.env.resolv_conf,
                    dhcp_client=self.options.dhcp_client,
                    while_waiting=self._prefetch_login,
                )
            except WorkerGone as exc:
                self.say(f"network worker: {exc}; bringing the network up in PID 1")
            finally:
                self.reporter.debug(f"network worker: {worker.timeline()}")
        elif worker is not None:
            worker.stop()  # iscsiboot.worker=no seen only now: the phase runs here
        if net is None:
            from iscsiboot.agent.phases.network import bring_up

            imports = self.state.get("prefetch")
            if imports is not None:
                imports.join(deadline.remaining())
            net = bring_up(
                plan,
                deadline,
                self.say,
                resolv_conf=self.env.resolv_conf,
                dhcp_client=self.options.dhcp_client,
            )
        self.state["network"] = net
        vlan = f" (VLAN {net.vlan} on {net.parent})" if net.vlan is not None else ""
        self.say(
            f"network: {net.device}{vlan} {net.address}/{net.prefix}"
            f" via {net.gateway or 'no gateway'} ({net.mode})"
        )

    def _prefetch_login(self) -> None:
        """Import the later phases while the network worker brings the network up."""
        try:
            import iscsiboot.agent.phases.disk
            import iscsiboot.agent.phases.label
            import iscsiboot.agent.phases.login
            import iscsiboot.agent.phases.mount
            import iscsiboot.proc  # subprocess, for e2fsck in the mount phase

            if self.options.login_backend == "native":
                import iscsiboot.agent.backends.kernel  # noqa: F401
        except ImportError as exc:  # the phase that needs it reports
            self.reporter.debug(f"prefetch: {exc}")

    def _modules_ready(self, deadline: Deadline, names: tuple[str, ...] | None = None) -> None:
        """Wait for ``names`` of the modules phase's background loads (None: all of them)."""
        background = self.state.get("background")
        if background is None:
            return
        if names is None:
            background.wait(deadline)
        else:
            background.ensure_now(names, deadline)

    def login(self, deadline: Deadline) -> None:
        from iscsiboot.agent.phases.login import login_all, make_backend
        from iscsiboot.agent.plan import login_targets

        self._modules_ready(deadline, LOGIN_MODULES)  # ext4 may still be loading while the login runs
        cfg = self.state["config"]
        backend = make_backend(self.options.login_backend, self.reporter.debug)
        self.state["backend"] = backend.name
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
        self.state["logins"] = done
        for target, res in done:
            self.say(f"logged in to {target.name if target else 'the iBFT targets'} ({res.cause.value})")

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

    def disk(self, deadline: Deadline) -> None:
        from iscsiboot.agent.phases.disk import Uevents, list_sessions, wait_for_disks

        self._modules_ready(deadline, DISK_MODULES)
        cfg = self.state["config"]
        logged = {t.name for t, _r in self.state.get("logins", []) if t is not None}
        # one login per target, but boot= and disk= may name different LUNs of it
        wanted = list(dict.fromkeys((t.name, t.lun) for t in cfg.targets if t.name in logged)) or None
        events = Uevents()
        try:
            disks = wait_for_disks(
                wanted, deadline, sysfs=self.env.sysfs, dev=self.env.dev, wait=events.wait, say=self.say
            )
        finally:
            events.close()
        self.state["disks"] = disks
        self.state["sessions"] = [
            {"session": s.sid, "target": s.target} for s in list_sessions(self.env.sysfs)
        ]

    def label(self, deadline: Deadline) -> None:
        from iscsiboot.agent.phases.label import candidates_of_disk, resolve
        from iscsiboot.agent.plan import locators
        from iscsiboot.disk.readers import file_reader

        cands = []
        for ready in self.state["disks"]:
            node = f"{self.env.dev}/{ready.disk.name}"
            cands.extend(
                candidates_of_disk(
                    ready.disk.name, ready.size, file_reader(node), ready.partitions, self.env.dev
                )
            )
        system_loc, storage_loc = locators(self.state["config"])
        system = resolve("System", system_loc, cands)
        storage = resolve("Storage", storage_loc, cands) if storage_loc is not None else None
        if storage is not None and storage.device == system.device:
            raise PhaseError(
                "label",
                f"System and Storage are the same file system ({system.device})",
                cause="ambiguous",
                fix="give Storage its own partition and label (disk=LABEL=Storage)",
            )
        self.state["system"], self.state["storage"] = system, storage
        self.say(
            f"System is {system.device} ({system.fs})"
            + (f", Storage is {storage.device} ({storage.fs})" if storage else ", no Storage")
        )

    def mount(self, deadline: Deadline) -> None:
        from iscsiboot.agent.phases.mount import Mounter
        from iscsiboot.agent.plan import FS_MODULES, mount_plan
        from iscsiboot.proc import which

        self._modules_ready(deadline)  # all of them: the file systems and loop
        system, storage = self.state["system"], self.state.get("storage")
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
            self._loader().ensure(FS_MODULES.get(fs, fs))

        mounter = Mounter(root=self.env.root, dev=self.env.dev, say=self.say, fsck=fsck, ensure_fs=ensure_fs)
        self.state["mounter"] = mounter
        steps = mount_plan(
            system.device, system.fs, storage.device if storage else None,
            storage.fs if storage else None, self.options.sysroot,
        )  # fmt: skip
        mounter.run(steps, deadline)

    def handoff(self, deadline: Deadline) -> None:
        from iscsiboot.agent.phases.handoff import choose_init, write_markers

        sysroot = os.path.join(self.env.root, self.options.sysroot.lstrip("/"))
        self.state["init"] = choose_init(sysroot, self.options.init)
        for path in ("flash", "storage"):
            if not os.path.isdir(os.path.join(sysroot, path)):
                raise PhaseError(
                    "handoff",
                    f"the SYSTEM image has no /{path} directory",
                    cause="no-mountpoint",
                    fix="use an OpenELEC/LibreELEC SYSTEM image (it has /flash and /storage)",
                )
        net = self.state.get("network")
        write_markers(self.env.dev, net.to_dict() if net else None)

    # ----------------------------------------------------------------- running
    def steps(self) -> list[tuple[str, Step]]:
        names = PHASES[: PHASES.index(self.last) + 1]
        return [(name, getattr(self, name)) for name in names]

    def cleanup(self) -> None:
        worker = getattr(self.state.get("early"), "worker", None)
        if worker is not None:
            worker.stop()  # a run that ended before the network phase
        mounter = self.state.get("mounter")
        if mounter is not None:
            mounter.rollback()

    def run(self, on_break: OnBreak = lambda _p: False) -> RunResult:
        for warning in self.options.warnings:
            self.reporter.line(f"warning: {warning}")
        result = run_phases(
            self.steps(), self.options, self.reporter, on_break=on_break, cleanup=self.cleanup
        )
        self.fill(result)
        self.result = result
        return result

    def fill(self, result: RunResult) -> None:
        result.warnings = [*self.options.warnings, *self.state.get("warnings", [])]
        system, storage = self.state.get("system"), self.state.get("storage")
        result.system = system.device if system else None
        result.storage = storage.device if storage else None
        net = self.state.get("network")
        result.network = net.to_dict() if net else None
        result.sessions = list(self.state.get("sessions", []))
        result.backend = self.state.get("backend")
        mounter = self.state.get("mounter")
        if mounter is not None:
            result.mounts = [
                f"{source} on {target} ({'rw' if rw else 'ro'})" for target, source, rw in mounter.done
            ]
        if result.ok and self.last != "handoff":
            result.phase = "done"

    def hook_values(self, result: RunResult) -> dict[str, str | None]:
        net = result.network or {}
        return {
            "ISCSIBOOT_OK": "1" if result.ok else "0",
            "ISCSIBOOT_PHASE": result.phase,
            "ISCSIBOOT_ERROR": result.error,
            "ISCSIBOOT_FIX": result.fix,
            "ISCSIBOOT_SYSTEM": result.system,
            "ISCSIBOOT_STORAGE": result.storage,
            "ISCSIBOOT_IFACE": net.get("device"),
            "ISCSIBOOT_ADDRESS": net.get("address"),
            "ISCSIBOOT_PREFIX": str(net["prefix"]) if net.get("prefix") is not None else None,
            "ISCSIBOOT_GATEWAY": net.get("gateway"),
            "ISCSIBOOT_DNS": " ".join(net.get("dns") or []),
            "ISCSIBOOT_SESSIONS": " ".join(s["target"] for s in result.sessions),
            "ISCSIBOOT_MOUNTS": "; ".join(result.mounts),
        }
