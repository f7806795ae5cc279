"""Where the image keeps its own runtime, and how a program of it is started (pure).

Everything the image brings to run the agent lives under :data:`PREFIX`: the
interpreter, its standard library, the C library and its loader, busybox (the full
image's; an overlay's only with ``--busybox``), e2fsck.
An overlay appended to a distribution's initramfs (LibreELEC's has its own C
library at the standard paths, reached through ``lib -> usr/lib``) then writes
nothing the base has.  The dynamic programs (:data:`LIBEXEC`) are never run
directly: their ELF interpreter names the standard loader path, which is the
base's.  They run through the image's own loader with the image's libraries
(:func:`loader_argv`); :data:`BIN` holds busybox (static, where the image has
it) and a small script per program that does that, and comes first on ``PATH``.
"""

from __future__ import annotations

PREFIX = "/usr/lib/iscsiboot"
BIN = f"{PREFIX}/bin"  # the launch scripts (and busybox): first on PATH
LIBEXEC = f"{PREFIX}/libexec"  # the dynamic programs, started only through LOADER
LIB = f"{PREFIX}/lib"  # the shared libraries, by soname, and the loader
LOADER_NAME = "ld-linux-x86-64.so.2"
LOADER = f"{LIB}/{LOADER_NAME}"
PYTHON_VERSION = "3.11"
STDLIB = f"{LIB}/python{PYTHON_VERSION}"
PYTHON = f"{BIN}/python{PYTHON_VERSION}"  # what sys.executable names (the launch script)
PYTHON_ELF = f"{LIBEXEC}/python{PYTHON_VERSION}"
BUSYBOX = f"{BIN}/busybox"  # static: needs no loader
PATH = f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin"


def loader_argv(program: str, argv0: str | None = None) -> list[str]:
    """The command that runs the dynamic ``program`` through the image's loader and libraries.

    ``argv0``: what the program sees as ``argv[0]`` (by default its launch script's path).
    """
    name = program.rsplit("/", 1)[-1]
    return [LOADER, "--library-path", LIB, "--argv0", argv0 or f"{BIN}/{name}", program]


def python_exec(argv0: str) -> tuple[str, list[str]]:
    """(program, argv) that exec the image's interpreter (``-S``) as ``argv0`` for the kernel.

    The loader is the program: ``argv0`` is what ``/proc/PID/cmdline`` starts with (systemd
    leaves a root storage daemon whose ``argv[0]`` starts with ``@`` alive), while the
    interpreter is told its own path (``--argv0``), from which it finds its standard library.
    """
    return LOADER, [argv0, "--library-path", LIB, "--argv0", PYTHON, PYTHON_ELF, "-S"]
