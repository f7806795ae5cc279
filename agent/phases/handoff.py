# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Hand the machine to the booted system: markers, mount moves, switch_root.

Markers for the booted system (OpenELEC's): ``/dev/.kernel_ipconfig`` says the
initramfs configured the network (do not reconfigure or take it down) and
``/dev/.storage_netboot`` says the storage lives on the network (keep the
network up until the file systems are unmounted at shutdown).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from iscsiboot.agent.errors import PhaseError

MOVES: tuple[str, ...] = ("/flash", "/storage", "/dev", "/proc", "/sys", "/run")
INITS: tuple[str, ...] = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init")


def markers(network: dict[str, object] | None) -> dict[str, str]:
    """File name (under /dev) -> contents of the markers for the booted system."""
    info = ""
    if network:
        info = "".join(f"{k.upper()}={v}\n" for k, v in network.items() if v not in (None, [], ""))
    return {".kernel_ipconfig": info, ".storage_netboot": info}


def choose_init(sysroot: str, wanted: str | None) -> str:
    for path in (wanted,) if wanted else INITS:
        full = os.path.join(sysroot, path.lstrip("/"))
        if os.path.exists(full) or os.path.islink(full):
            return path
    raise PhaseError(
        "handoff",
        f"no init in the new root ({wanted or ' or '.join(INITS)})",
        cause="no-init",
        fix="check that SYSTEM is an OpenELEC/LibreELEC system image, or give init=",
    )


def write_markers(dev: str, network: dict[str, object] | None) -> None:
    for name, text in markers(network).items():
        with open(os.path.join(dev, name), "w") as handle:
            handle.write(text)


def move_mounts(sysroot: str, mounted: set[str], say: Callable[[str], None], root: str = "/") -> list[str]:
    """Move /flash, /storage and the kernel file systems (those mounted) under the new root."""
    from iscsiboot.agent import sysc

    moved: list[str] = []
    for path in MOVES:
        source = os.path.join(root, path.lstrip("/"))
        if source not in mounted:
            continue
        target = os.path.join(sysroot, path.lstrip("/"))
        if not os.path.isdir(target):
            raise PhaseError(
                "handoff",
                f"the new root has no {path} directory to move {path} onto",
                cause="no-mountpoint",
                fix="use an OpenELEC/LibreELEC SYSTEM image (it has /flash and /storage)",
            )
        try:
            sysc.mount(source, target, None, sysc.MS_MOVE)
        except OSError as exc:
            raise PhaseError(
                "handoff", f"cannot move {path} into the new root", cause="move", evidence=str(exc)
            ) from None
        say(f"moved {path} to {target}")
        moved.append(path)
    return moved


def mounted_points(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    try:
        with open(mountinfo) as handle:
            return {line.split()[4] for line in handle if len(line.split()) > 4}
    except OSError:
        return set()
