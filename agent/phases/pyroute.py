# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Import pyroute2 submodules without running its heavy ``pyroute2/__init__.py``.

pyroute2's package __init__ imports NDB (sqlite3), IPDB, nftables and more;
the agent needs only IPRoute, the DHCP client and the uevent socket.  An empty
package module registered first lets ``from pyroute2.iproute.linux import ...``
load just those (about 40 ms and 6 MiB less, no sqlite3).
"""

from __future__ import annotations

import importlib.util
import sys
import types


def load_pyroute2() -> None:
    """Register a bare ``pyroute2`` package (once); a full import already done is kept."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.submodule_search_locations is None:
        from iscsiboot.agent.errors import PhaseError

        raise PhaseError(
            "network",
            "pyroute2 is not installed",
            cause="missing-library",
            fix="add pyroute2 to the initramfs",
        )
    package = types.ModuleType("pyroute2")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["pyroute2"] = package
