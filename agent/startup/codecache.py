"""The code that ``@dataclass`` generates, compiled when the initramfs is built.

For every class, ``@dataclass`` writes the source of ``__init__``,
``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__`` ... and compiles it
while the module is imported (``exec`` of a string).  In a slow guest that
compiling is a good part of PID 1's start: the agent and pyroute2 define over
two hundred such methods.

The initramfs builder imports the agent's modules under the image's own
interpreter with :func:`record` in place, and stores every generated source
with its code object (``marshal``) in the image.  At boot :func:`install`
puts a lookup in front of the ``exec`` that ``dataclasses`` calls: the same
source gets the same code, compiled once on the build host.  A source that
is not in the table compiles as before, so a stale or missing table costs
time, never correctness.  Standard library only.

``dataclasses`` is imported here without ``inspect`` (with ``ast``, ``dis`` and
``tokenize``, about a tenth of a second of a slow guest's start), which it uses only
to write a docstring for a class without one (every class, once the image's byte
code has none): while it is imported, ``inspect`` is a stand-in whose
``signature`` is empty (the docstring is then the class's name) and which
hands anything else to the real module.  Whoever imports ``inspect`` later
gets the real one.
"""

from __future__ import annotations

import builtins
import marshal
import sys

TYPE_CHECKING = False  # no typing at run time (see init)
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any

PATH = "/usr/lib/iscsiboot/dataclasses.marshal"


class _Inspect(type(sys)):  # type: ignore[misc]  # a module object: ``types`` is not imported yet
    """``dataclasses``' view of ``inspect``: no signatures; anything else from the real module."""

    def signature(self, obj: object) -> str:
        return ""  # the docstring is the class's name (3.11.2 calls str() on this, later ones catch errors)

    def __getattr__(self, name: str) -> object:
        import importlib  # noqa: PLC0415  (only if dataclasses ever needs more)

        return getattr(importlib.import_module("inspect"), name)


def _import_dataclasses() -> Any:
    """``dataclasses``, without importing ``inspect`` unless something did already."""
    if "dataclasses" in sys.modules or "inspect" in sys.modules:
        import dataclasses  # noqa: PLC0415

        return dataclasses
    stand_in = _Inspect("inspect")
    sys.modules["inspect"] = stand_in
    try:
        import dataclasses  # noqa: PLC0415
    finally:
        if sys.modules.get("inspect") is stand_in:
            del sys.modules["inspect"]
    return dataclasses


dataclasses = _import_dataclasses()


class Cached:
    """``exec`` for dataclasses: precompiled code for the sources in ``table``."""

    def __init__(self, table: dict[str, CodeType]) -> None:
        self.table = table
        self.hits = 0
        self.misses = 0

    def __call__(self, source: Any, globals_: Any = None, locals_: Any = None) -> None:
        code = self.table.get(source) if isinstance(source, str) else None
        if code is None:
            self.misses += 1
            builtins.exec(source, globals_, locals_)
        else:
            self.hits += 1
            builtins.exec(code, globals_, locals_)


class Recorder:
    """``exec`` for dataclasses that keeps each source with its compiled code (build time)."""

    def __init__(self) -> None:
        self.table: dict[str, CodeType] = {}

    def __call__(self, source: Any, globals_: Any = None, locals_: Any = None) -> None:
        if isinstance(source, str):
            code = self.table.get(source)
            if code is None:
                code = self.table[source] = compile(source, "<string>", "exec")
            source = code
        builtins.exec(source, globals_, locals_)

    def dump(self) -> bytes:
        return marshal.dumps(self.table)


def load(data: bytes) -> dict[str, CodeType]:
    """The table from its marshal bytes; empty when they are not one (another interpreter)."""
    try:
        table = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if isinstance(k, str) and type(v).__name__ == "code"}


def install(path: str = PATH) -> Cached | None:
    """Use the table at ``path`` for dataclasses from now on; None when there is none.

    Installed already (a forked child inherits PID 1's): that hook, not a second one.
    """
    current = vars(dataclasses).get("exec")
    if isinstance(current, Cached):
        return current
    try:
        with open(path, "rb") as handle:
            table = load(handle.read())
    except OSError:
        return None
    if not table:
        return None
    hook = Cached(table)
    dataclasses.exec = hook  # the module's own name shadows the builtin
    return hook


def record() -> Recorder:
    """Keep every source dataclasses compiles from now on (the builder's trace)."""
    recorder = Recorder()
    dataclasses.exec = recorder
    return recorder


def uninstall() -> None:
    """Back to the builtin ``exec``."""
    if "exec" in vars(dataclasses):
        del dataclasses.exec
