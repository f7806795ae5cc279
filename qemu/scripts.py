"""The guest scripts of the harness (shell, iPXE): files beside this module, filled in by name.

A script names a value as ``@NAME@``; its own ``$`` and ``${...}`` stay as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with each ``@NAME@`` replaced by ``values[NAME]`` (pure; a missing name is a KeyError)."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def script(name: str, **values: str) -> str:
    """The script file ``name`` of this folder, filled in with ``values``."""
    return fill((HERE / name).read_text(), values)
