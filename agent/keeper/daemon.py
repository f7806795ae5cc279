"""The keeper's entry point: logging and hardening first (:mod:`iscsiboot.agent.daemons`), then the rest.

Only after the hardening are the keeper's modules imported, all of them
(:mod:`.resident`): after the switch the keeper never reads a file of the root.
"""

from __future__ import annotations

import sys

from iscsiboot.agent.daemons import Log, harden, log_fd

PREFIX = "iscsiboot-keeper: "


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    log = Log(log_fd(args), PREFIX)
    harden(log)
    try:
        from iscsiboot.agent.keeper import resident  # noqa: PLC0415  (imported after the hardening)
    except BaseException as exc:  # the log must say why the keeper could not start
        log.error(f"cannot start: {type(exc).__name__}: {exc}")
        return 70
    return resident.main(args, log)


if __name__ == "__main__":
    sys.exit(main())
