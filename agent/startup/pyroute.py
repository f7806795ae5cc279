# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Import pyroute2 submodules without running its heavy ``pyroute2/__init__.py``.

pyroute2's package __init__ imports NDB (sqlite3), IPDB, nftables and more;
the agent needs only IPRoute and the DHCP client.  An empty
package module registered first lets ``from pyroute2.iproute.linux import ...``
load just those (about 40 ms and 6 MiB less, no sqlite3).

pyroute2's traffic-control message module imports its 22 qdisc and filter
plugins when it is imported, and IPRoute imports it; the agent never sends a
tc request.  The plugins load lazily (:class:`importlib.util.LazyLoader`):
each one runs when something first touches it, so tc still works, and a
boot skips about 0.1 s of a slow guest's CPU.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

LAZY_PREFIXES: tuple[str, ...] = ("pyroute2.netlink.rtnl.tcmsg.",)


class LazyPlugins:
    """A meta path finder: the modules under :data:`LAZY_PREFIXES` are found as usual, run when first touched.

    (Not an ``importlib.abc`` subclass: that module imports importlib.resources.)
    """

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not name.startswith(LAZY_PREFIXES) or path is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = importlib.util.LazyLoader(spec.loader)  # type: ignore[arg-type]
        return spec


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
    if not any(isinstance(finder, LazyPlugins) for finder in sys.meta_path):
        sys.meta_path.insert(0, LazyPlugins())
