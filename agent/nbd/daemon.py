"""The resident NBD daemon's entry point: logging and hardening first, then everything else.

The order and the hardening are every root storage daemon's
(:mod:`iscsiboot.agent.daemons`): the log to /dev/kmsg opened first, memory
locked, out of the OOM killer's reach, an I/O flusher, standing in ``/``.  Only
then are the modules imported, all of them (:mod:`.resident`): after the switch
the daemon never reads a file of the root it serves.
"""

from __future__ import annotations

import sys

from iscsiboot.agent.daemons import start

PREFIX = "iscsiboot-nbd: "


def main(argv: list[str] | None = None) -> int:
    return start(argv, PREFIX, "iscsiboot.agent.nbd.resident")


if __name__ == "__main__":
    sys.exit(main())
