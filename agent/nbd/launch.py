"""How to start the NBD daemon: the one place that knows the interpreter, its flags and its path.

The daemon is exec'd (never a fork of the agent: a fresh, small process) with
an ``argv[0]`` that starts with ``@``, which systemd takes as a root storage
daemon's mark: neither switch_root's clean-up nor the shutdown's killing spree
kills it.  Such an ``argv[0]`` tells the interpreter nothing about where it
lives, so the command runs it without ``site`` (``-S``, as the image's
``/init`` does) and gives it the agent's own module search path; where the
agent runs with ``site`` (a development tree, an editable install), the same
site folders are added, with their ``.pth`` files.
"""

from __future__ import annotations

import os
import sys

from iscsiboot.agent import layout

MODULE = "iscsiboot.agent.nbd.daemon"


def _site_dirs() -> list[str]:
    if sys.flags.no_site:
        return []
    import site  # noqa: PLC0415  (only where the agent itself runs with site)

    return [d for d in site.getsitepackages() if d in sys.path]


def daemon_command(argv0: str) -> tuple[str, list[str]]:
    """(the program to exec, its argv) that runs :mod:`iscsiboot.agent.nbd.daemon`; the caller
    appends the daemon's own options."""
    path = [entry for entry in sys.path if os.path.isabs(entry)]
    code = f"import sys\nsys.path[:] = {path!r}\n"
    dirs = _site_dirs()
    if dirs:
        code += "import site\n" + "".join(f"site.addsitedir({d!r})\n" for d in dirs)
    code += f"from {MODULE} import main\nsys.exit(main())\n"
    if sys.executable == layout.PYTHON:  # the image's interpreter: only its own loader runs it
        program, argv = layout.python_exec(argv0)
        return program, [*argv, "-c", code]
    return sys.executable, [argv0, "-S", "-c", code]
