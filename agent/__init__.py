"""The boot-time agent: brings an iSCSI-booted OpenELEC/LibreELEC system up from the initramfs.

``iscsiboot.agent.init.main()`` is PID 1 in the initramfs; ``iscsiboot agent run``
runs the same phases from a shell (hook mode, dry runs).  Pure logic (planning,
parsing tool output, resolving labels) lives in :mod:`iscsiboot.agent.plan` and
the ``parse_*`` functions of each phase module; the phase modules do the I/O.

:data:`RUNTIME_MODULES` lists every module the agent may import at boot, so the
initramfs builder can trace and pack them, with the data files (scripts) beside them.
"""

from __future__ import annotations

PHASES: tuple[str, ...] = ("config", "modules", "network", "login", "disk", "label", "mount", "handoff")

RUNTIME_MODULES: tuple[str, ...] = (
    "iscsiboot",
    "iscsiboot.errors",
    "iscsiboot.secret",
    "iscsiboot.model",
    "iscsiboot.proc",
    "iscsiboot.output",
    "iscsiboot.template",
    "iscsiboot.agent",
    "iscsiboot.agent.errors",
    "iscsiboot.agent.options",
    "iscsiboot.agent.transport",
    "iscsiboot.agent.plan",
    "iscsiboot.agent.report",
    "iscsiboot.agent.sysc",
    "iscsiboot.agent.deadline",
    "iscsiboot.agent.startup",
    "iscsiboot.agent.startup.early",
    "iscsiboot.agent.startup.netproc",
    "iscsiboot.agent.startup.codecache",
    "iscsiboot.agent.startup.pyroute",
    "iscsiboot.agent.kmod",
    "iscsiboot.agent.results",
    "iscsiboot.agent.netup",
    "iscsiboot.agent.runner",
    "iscsiboot.agent.init",
    "iscsiboot.agent.phases",
    "iscsiboot.agent.phases.config",
    "iscsiboot.agent.phases.modules",
    "iscsiboot.agent.phases.network",
    "iscsiboot.agent.phases.netlight",
    "iscsiboot.agent.phases.netsteps",
    "iscsiboot.agent.phases.login",
    "iscsiboot.agent.backends",
    "iscsiboot.agent.backends.result",
    "iscsiboot.agent.backends.kernel",
    "iscsiboot.agent.backends.iscsistart",
    "iscsiboot.iscsi.netlink",
    "iscsiboot.iscsi.status",
    "iscsiboot.agent.phases.disk",
    "iscsiboot.agent.phases.label",
    "iscsiboot.agent.phases.mount",
    "iscsiboot.agent.phases.handoff",
    "iscsiboot.cmdline.words",
    "iscsiboot.cmdline.parse",
    "iscsiboot.cmdline.uid",  # only for a command line with @UID@
    "iscsiboot.ibft.sources",
    "iscsiboot.ibft.types",
    "iscsiboot.ibft.codec",
    "iscsiboot.ibft.parse",
    "iscsiboot.ibft.build",
    "iscsiboot.ibft.mapping",
    "iscsiboot.ibft.layouts",
    "iscsiboot.disk.probe",
    "iscsiboot.disk.readers",
    # imported only after a failed login, to ask the target why
    "iscsiboot.doctor.checks",
    # imported only when needed: a close match for a mistyped boot= key, a login retry's jitter
    "difflib",
    "random",
    # third-party, imported only by the network phase (the network worker's)
    "pyroute2.iproute.linux",
    "pyroute2.netlink.rtnl",
    "pyroute2.dhcp.client",
    "pyroute2.dhcp.fsm",
    "pyroute2.dhcp.leases",
    "pyroute2.dhcp.enums.dhcp",
)
