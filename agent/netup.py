# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""The one way the network phase brings the network up, in PID 1's process or in its network worker.

:func:`choose` picks the implementation once, from the parsed options
(``iscsiboot.worker=``) and whether a worker could be started:

* :class:`InProcess` runs :func:`iscsiboot.agent.phases.network.bring_up` here,
  after the thread that imports pyroute2 ahead of it;
* :class:`ViaWorker` hands the plan to the worker
  (:class:`iscsiboot.agent.startup.netproc.NetWorker`) and, when the worker is
  gone without an answer, falls back to :class:`InProcess`.

Both bring a plan that has its own IPv4 address (a static one, or the firmware's
DHCP lease) up in this process with :mod:`iscsiboot.agent.phases.netlight`: raw
rtnetlink, no pyroute2 to wait for (a worker is stopped).  The firmware's lease
is then renewed in the background (:class:`~iscsiboot.agent.phases.lease.Renewal`),
from when the login is done (:meth:`NetworkUp.start_background`: starting it costs PID 1
the subprocess machinery and a fork, which would hold the login up, while the kernel's
LUN scan leaves time for it afterwards); :meth:`NetworkUp.renewal` says how that went, at
the end of the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.options import AgentOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from iscsiboot.agent.phases.lease import Renewal
    from iscsiboot.agent.plan import NetPlan, NetResult
    from iscsiboot.agent.startup.netproc import NetWorker

Say = Callable[[str], None]


class NetworkUp(Protocol):
    """Brings the network up as a plan says; PhaseError when it cannot."""

    def start_imports(self, dhcp: bool) -> None:
        """Import what the bring-up needs, ahead of it (in the background; once)."""

    def bring_up(
        self, plan: NetPlan, deadline: Deadline, say: Say, *, debug: Say, while_waiting: Callable[[], None]
    ) -> NetResult: ...

    def stop(self) -> None:
        """Give up what is still running (a run that ended before the network phase)."""

    def start_background(self) -> None:
        """Start what the network phase left for later (the firmware lease's renewal; once)."""

    def renewal(self, seconds: float) -> tuple[dict[str, Any] | None, str | None] | None:
        """The firmware lease's renewal: (its lease, or None and the problem); None when none runs.

        Waits at most ``seconds`` for it; nothing runs afterwards.
        """


def direct(plan: NetPlan) -> bool:
    """Whether ``plan`` comes up in this process through raw rtnetlink (it brings its own address)."""
    from iscsiboot.agent.phases.netlight import suits

    return suits(plan)


def up_direct(plan: NetPlan, deadline: Deadline, say: Say, resolv_conf: str | None) -> NetResult:
    from iscsiboot.agent.phases.netlight import bring_up

    return bring_up(plan, deadline, say, resolv_conf=resolv_conf)


class InProcess:
    """The network phase in this process."""

    def __init__(
        self, options: AgentOptions, *, resolv_conf: str | None, imports: threading.Thread | None = None
    ) -> None:
        self.options = options
        self.resolv_conf = resolv_conf
        self.imports = imports  # the thread importing pyroute2 (PID 1's start-up thread's, or ours)
        self.renewing: Renewal | None = None  # the firmware lease's renewal, under way
        self.pending: tuple[NetPlan, str, float] | None = None  # the renewal, not started yet

    def start_imports(self, dhcp: bool) -> None:
        if self.imports is None:
            from iscsiboot.agent.phases.network import prefetch

            self.imports = threading.Thread(target=prefetch, args=(dhcp,), name="prefetch", daemon=True)
            self.imports.start()

    def bring_up(
        self, plan: NetPlan, deadline: Deadline, say: Say, *, debug: Say, while_waiting: Callable[[], None]
    ) -> NetResult:
        if direct(plan):  # before anything imports pyroute2 or asyncio
            net = up_direct(plan, deadline, say, self.resolv_conf)
            if plan.firmware_lease:
                self.pending = (plan, net.device, deadline.seconds)  # after the login
            return net
        from iscsiboot.agent.phases.network import bring_up

        if self.imports is not None:
            self.imports.join(deadline.remaining())
        return bring_up(
            plan, deadline, say, resolv_conf=self.resolv_conf, dhcp_client=self.options.dhcp_client
        )

    def start_renewal(self, plan: NetPlan, device: str, seconds: float) -> None:
        """Renew the firmware's lease in the background (:class:`~iscsiboot.agent.phases.lease.Renewal`)."""
        from iscsiboot.agent.phases.lease import Renewal

        self.renewing = Renewal(plan, device, seconds, dhcp_client=self.options.dhcp_client).start()

    def stop(self) -> None:
        return None

    def start_background(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            self.start_renewal(*pending)

    def renewal(self, seconds: float) -> tuple[dict[str, Any] | None, str | None] | None:
        self.start_background()  # a run that ended before its login phase
        renewing, self.renewing = self.renewing, None
        return None if renewing is None else renewing.outcome(seconds)


class ViaWorker:
    """The network phase in PID 1's network worker; in this process if the worker is gone."""

    def __init__(self, worker: NetWorker, fallback: InProcess) -> None:
        self.worker = worker
        self.fallback = fallback

    def start_imports(self, dhcp: bool) -> None:
        return None  # the worker imported pyroute2 itself

    def bring_up(
        self, plan: NetPlan, deadline: Deadline, say: Say, *, debug: Say, while_waiting: Callable[[], None]
    ) -> NetResult:
        from iscsiboot.agent.startup.netproc import WorkerGone

        if direct(plan):
            self.worker.kill()  # its pyroute2 is not needed: no waiting for it to finish importing
            return self.fallback.bring_up(plan, deadline, say, debug=debug, while_waiting=while_waiting)
        try:
            return self.worker.bring_up(
                plan,
                deadline,
                say,
                resolv_conf=self.fallback.resolv_conf,
                dhcp_client=self.fallback.options.dhcp_client,
                while_waiting=while_waiting,
            )
        except WorkerGone as exc:
            say(f"network worker: {exc}; bringing the network up in PID 1")
        finally:
            debug(f"network worker: {self.worker.timeline()}")
        self.fallback.start_imports(self.fallback.options.dhcp_expected)
        return self.fallback.bring_up(plan, deadline, say, debug=debug, while_waiting=while_waiting)

    def stop(self) -> None:
        self.worker.stop()

    def start_background(self) -> None:
        self.fallback.start_background()

    def renewal(self, seconds: float) -> tuple[dict[str, Any] | None, str | None] | None:
        return self.fallback.renewal(seconds)


def choose(
    options: AgentOptions,
    *,
    worker: NetWorker | None = None,
    imports: threading.Thread | None = None,
    resolv_conf: str | None = None,
) -> NetworkUp:
    """The implementation the options ask for: the worker when it runs and is wanted, else this process."""
    here = InProcess(options, resolv_conf=resolv_conf, imports=imports)
    if worker is not None and worker.running and options.network_worker:
        return ViaWorker(worker, here)
    return here
