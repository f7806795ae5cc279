"""How to start the NBD daemon: its module under an ``@`` name (:mod:`iscsiboot.agent.daemons`)."""

from __future__ import annotations

from iscsiboot.agent.daemons import daemon_command as command

MODULE = "iscsiboot.agent.nbd.daemon"


def daemon_command(argv0: str) -> tuple[str, list[str]]:
    """(the program to exec, its argv) that runs :mod:`iscsiboot.agent.nbd.daemon`; the caller
    appends the daemon's own options."""
    return command(argv0, MODULE)
