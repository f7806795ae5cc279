"""The resident NBD daemon's entry point: logging and hardening first, then everything else.

The order and the hardening are every root storage daemon's
(:mod:`iscsiboot.agent.daemons`): the log to /dev/kmsg opened first, memory
locked, out of the OOM killer's reach, an I/O flusher, standing in ``/``.  Only
then are the modules imported, all of them (:mod:`.resident`): after the switch
the daemon never reads a file of the root it serves.
"""

from __future__ import annotations

import sys

from iscsiboot.agent.daemons import Log, harden, log_fd

PREFIX = "iscsiboot-nbd: "


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    log = Log(log_fd(args), PREFIX)
    harden(log)
    try:
        from iscsiboot.agent.nbd import resident  # noqa: PLC0415  (imported after the hardening)
    except BaseException as exc:  # the log must say why the daemon could not start
        log.error(f"cannot start: {type(exc).__name__}: {exc}")
        return 70
    return resident.main(args, log)


if __name__ == "__main__":
    sys.exit(main())
