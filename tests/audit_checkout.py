"""Record every file, folder, import and command of a Python process that names a forbidden path.

Installed into a test virtual environment with a ``.pth`` line (``import
audit_checkout``): when ``CHECKOUT_AUDIT`` holds paths (``os.pathsep``
separated), each audit event that reads files, lists folders, imports or
starts programs and mentions one of them is appended to the file
``CHECKOUT_AUDIT_LOG``.  Without ``CHECKOUT_AUDIT`` it does nothing.
"""

from __future__ import annotations

import os
import sys

EVENTS = frozenset(
    {
        "open",
        "os.listdir",
        "os.scandir",
        "os.chdir",
        "import",
        "glob.glob",
        "shutil.copyfile",
        "shutil.copytree",
        "subprocess.Popen",
        "os.posix_spawn",
        "os.exec",
        "os.spawn",
        "os.system",
    }
)


def install(forbidden: list[str], log_path: str) -> None:
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 (open for the life of the process)

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event in EVENTS:
            text = repr(args)
            if any(path in text for path in forbidden):
                log.write(f"{event} {text[:400]}\n")

    sys.addaudithook(hook)


_forbidden = [p for p in os.environ.get("CHECKOUT_AUDIT", "").split(os.pathsep) if p]
if _forbidden:
    install(_forbidden, os.environ["CHECKOUT_AUDIT_LOG"])
