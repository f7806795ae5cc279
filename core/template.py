"""Scripts kept as files beside their code, with ``@NAME@`` values filled in by name.

A script names a value as ``@NAME@``; its own ``$`` and ``${...}`` stay as they are.
Light on purpose (only :mod:`re`): the agent fills its DHCP report script at boot.
"""

from __future__ import annotations

import re

PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with each ``@NAME@`` replaced by ``values[NAME]`` (pure; a missing name is a KeyError)."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
