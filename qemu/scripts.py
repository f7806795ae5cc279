"""The guest scripts of the harness (shell, iPXE): files beside this module, filled in by name.

A script names a value as ``@NAME@`` (see :func:`iscsiboot.template.fill`).
"""

from __future__ import annotations

from pathlib import Path

from iscsiboot.template import fill

HERE = Path(__file__).resolve().parent


def script(name: str, **values: str) -> str:
    """The script file ``name`` of this folder, filled in with ``values``."""
    return fill((HERE / name).read_text(), values)
