"""The agent's own kernel command line options (pure).

The boot model (targets, network, System/Storage) comes from
:mod:`iscsiboot.cmdline.parse`; this module reads only what steers the agent:
OpenELEC's ``debugging``, ``progress`` and ``break=<phase>``, and the
``iscsiboot.*`` options:

``iscsiboot.on_failure=poweroff|reboot|shell``, ``iscsiboot.reboot_delay=SECONDS``,
``iscsiboot.timeout.<phase>=SECONDS``, ``iscsiboot.cmdline=FILE`` (read the boot
options from FILE instead, for tests), ``iscsiboot.backend=native|iscsistart``
(the login backend: ``native``, the default, logs in over NETLINK_ISCSI; ``iscsistart`` runs
open-iscsi's tool, for images built with ``--backend iscsistart``; ``iscsiboot.login=`` is the
same option), ``iscsiboot.dhcp=pyroute2|udhcpc``
(the DHCP client; udhcpc is also the fallback when pyroute2's client is missing),
``iscsiboot.transport=auto|kernel|nbd`` (how the LUN reaches the kernel:
:mod:`iscsiboot.agent.transport`),
``iscsiboot.keeper=yes|no`` (the kernel transport leaves a session keeper,
:mod:`iscsiboot.agent.keeper`, that logs the sessions in again after a connection loss),
``iscsiboot.recovery_timeout=SECONDS|never`` (how long the kernel queues I/O while a session
is down: 600 s with a keeper, 120 s without),
``iscsiboot.worker=yes|no`` (PID 1 brings the network up in a worker process of its own,
:mod:`iscsiboot.agent.startup.netproc`; ``no`` keeps it in PID 1; a network from the iBFT
starts none: its address goes on through raw rtnetlink), ``iscsiboot.sysroot=DIR`` and
``init=PATH`` (the init of the new root).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from iscsiboot.agent import PHASES
from iscsiboot.agent.keeper.config import parse_timeout
from iscsiboot.agent.transport import CHOICES as TRANSPORTS
from iscsiboot.cmdline.parse import tokenize
from iscsiboot.cmdline.words import DEBIAN_FLAGS, DRACUT_FLAGS
from iscsiboot.errors import ParseError

DEFAULT_TIMEOUTS: dict[str, float] = {
    "config": 10.0,
    "modules": 30.0,
    "network": 30.0,
    "login": 60.0,
    "disk": 30.0,
    "label": 15.0,
    "mount": 300.0,
    "handoff": 15.0,
}
# login backends: native (the default, NETLINK_ISCSI) or open-iscsi's iscsistart
BACKENDS = ("native", "iscsistart")


class OnFailure(enum.Enum):
    SHELL = "shell"
    REBOOT = "reboot"
    POWEROFF = "poweroff"


@dataclass(frozen=True)
class AgentOptions:
    debugging: bool = False
    progress: bool = False
    breaks: frozenset[str] = frozenset()
    on_failure: OnFailure | None = None  # None: a shell when a console is attached, else reboot
    reboot_delay: float = 10.0
    timeouts: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    cmdline_file: str | None = None
    login_backend: str = "native"
    transport: str = "auto"  # auto, kernel or nbd (iscsiboot.agent.transport)
    dhcp_client: str = "pyroute2"
    network_worker: bool = True
    dhcp_expected: bool = True  # ip= asks for DHCP (or the iBFT, or is absent): its client is imported early
    # The network comes from the iBFT (boot=ISCSI=auto without ip=, or ip=ibft): the firmware's
    # address, set without pyroute2 (no network worker is started for it ahead of time)
    network_from_firmware: bool = False
    sysroot: str = "/sysroot"
    init: str | None = None
    warnings: tuple[str, ...] = ()
    keeper: bool = True  # a session keeper recovers the kernel sessions after the switch
    recovery_timeout: int | None = None  # None: 600 s with a keeper, 120 s without; -1: never

    def session_timeout(self) -> int:
        """The sessions' recovery timeout: the option, else 600 s with a keeper, else 120 s."""
        if self.recovery_timeout is not None:
            return self.recovery_timeout
        return 600 if self.keeper else 120

    def timeout(self, phase: str) -> float:
        return self.timeouts.get(phase, DEFAULT_TIMEOUTS.get(phase, 30.0))


def _seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ParseError(f"{value!r} is not a number of seconds", where=key) from None
    if not 0 <= seconds <= 3600:
        raise ParseError(f"{value} s is out of range (0-3600)", where=key)
    return seconds


def _firmware_flag(key: str, has_value: bool, value: str) -> bool:
    """The words that take the boot from the iBFT (``iscsi_firmware``, ``rd.iscsi.ibft=1``)."""
    if not has_value:
        return key in DEBIAN_FLAGS or key in DRACUT_FLAGS
    return key in DRACUT_FLAGS and value in ("1", "yes", "on")


def parse_options(text: str) -> AgentOptions:
    """Read the agent's options from a kernel command line; unknown tokens are ignored."""
    debugging = progress = False
    breaks: set[str] = set()
    on_failure: OnFailure | None = None
    reboot_delay = 10.0
    timeouts = dict(DEFAULT_TIMEOUTS)
    cmdline_file = init = None
    login = "native"
    transport = "auto"
    dhcp_client = "pyroute2"
    worker = True
    sysroot = "/sysroot"
    keeper = True
    recovery_timeout: int | None = None
    warnings: list[str] = []
    ips: list[str] = []
    firmware = False  # boot= or disk= takes its target from the iBFT
    for token in tokenize(text):
        key, has_value, value = token.partition("=")
        if key == "ip" and has_value:
            ips.append(value)
        if (key in ("boot", "disk") and value.startswith("ISCSI=auto,")) or _firmware_flag(
            key, bool(has_value), value
        ):
            firmware = True
        if token == "debugging":
            debugging = True
        elif token == "progress":
            progress = True
        elif key == "break" and has_value:
            for name in value.split(","):
                if name in PHASES:
                    breaks.add(name)
                else:
                    warnings.append(f"break={name}: unknown phase (use one of {', '.join(PHASES)})")
        elif key == "iscsiboot.on_failure":
            try:
                on_failure = OnFailure(value)
            except ValueError:
                raise ParseError(
                    f"unknown action {value!r}", where=key, fix="use poweroff, reboot or shell"
                ) from None
        elif key == "iscsiboot.reboot_delay":
            reboot_delay = _seconds(key, value)
        elif key.startswith("iscsiboot.timeout."):
            phase = key.removeprefix("iscsiboot.timeout.")
            if phase not in PHASES:
                raise ParseError(f"unknown phase {phase!r}", where=key, fix=f"use one of {', '.join(PHASES)}")
            timeouts[phase] = _seconds(key, value)
        elif key == "iscsiboot.cmdline" and value:
            cmdline_file = value
        elif key in ("iscsiboot.login", "iscsiboot.backend") and value:
            if value not in BACKENDS:
                raise ParseError(
                    f"unknown login backend {value!r}", where=key, fix="use native or iscsistart"
                )
            login = value
        elif key == "iscsiboot.transport":
            if value not in TRANSPORTS:
                raise ParseError(
                    f"unknown transport {value!r}", where=key, fix=f"use one of {', '.join(TRANSPORTS)}"
                )
            transport = value
        elif key == "iscsiboot.dhcp":
            if value not in ("pyroute2", "udhcpc"):
                raise ParseError(f"unknown DHCP client {value!r}", where=key, fix="use pyroute2 or udhcpc")
            dhcp_client = value
        elif key == "iscsiboot.worker":
            if value not in ("yes", "no"):
                raise ParseError(f"{value!r} is not yes or no", where=key, fix="use yes or no")
            worker = value == "yes"
        elif key == "iscsiboot.keeper":
            if value not in ("yes", "no"):
                raise ParseError(f"{value!r} is not yes or no", where=key, fix="use yes or no")
            keeper = value == "yes"
        elif key == "iscsiboot.recovery_timeout":
            try:
                recovery_timeout = parse_timeout(value)
            except ValueError as exc:
                raise ParseError(str(exc), where=key, fix="give 1-86400 seconds, or never") from None
        elif key == "iscsiboot.sysroot" and value.startswith("/"):
            sysroot = value
        elif key == "init" and value.startswith("/"):
            init = value
    return AgentOptions(
        debugging=debugging,
        progress=progress,
        breaks=frozenset(breaks),
        on_failure=on_failure,
        reboot_delay=reboot_delay,
        timeouts=timeouts,
        cmdline_file=cmdline_file,
        login_backend=login,
        transport=transport,
        dhcp_client=dhcp_client,
        network_worker=worker,
        dhcp_expected=not ips or any("dhcp" in value or value == "ibft" for value in ips),
        network_from_firmware=firmware and all(value == "ibft" for value in ips),
        sysroot=sysroot,
        init=init,
        warnings=tuple(warnings),
        keeper=keeper,
        recovery_timeout=recovery_timeout,
    )
