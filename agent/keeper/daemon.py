"""The keeper's entry point: logging and hardening first (:mod:`iscsiboot.agent.daemons`), then the rest.

Only after the hardening are the keeper's modules imported, all of them
(:mod:`.resident`): after the switch the keeper never reads a file of the root.
"""

from __future__ import annotations

import sys

from iscsiboot.agent.daemons import start

PREFIX = "iscsiboot-keeper: "


def main(argv: list[str] | None = None) -> int:
    return start(argv, PREFIX, "iscsiboot.agent.keeper.resident")


if __name__ == "__main__":
    sys.exit(main())
