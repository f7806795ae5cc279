#!/usr/bin/env python3
"""Boot speed and footprint of the boot agent, compared with a busybox shell init.

In one run, the same kernel, disk image layout, target and QEMU settings
(iPXE ``sanboot`` with mutual CHAP, the iBFT from iPXE) boot ``--runs``
times each with

* ``agent``: the project's initramfs (Python and the boot agent), and
* ``shell``: a busybox ``/init`` that loads the same kernel modules, runs
  ``iscsistart -N`` and ``iscsistart -b``, then tries every second to mount
  ``LABEL=System`` and ``LABEL=Storage`` (found with busybox ``findfs``);

and, once per round (zstd, each built by its own tool from Debian's packages for
the same kernel: :mod:`iscsiboot.qemu.peers`), the distributions' generators:

* ``initramfs-tools``: ``mkinitramfs`` with open-iscsi's hook, booted with ``iscsi_auto``;
* ``dracut``: its ``network-legacy`` and ``iscsi`` modules, ``rd.iscsi.firmware=1 ip=ibft``.

A peer's milestone is its root (the System partition) mounted: the kernel's
``EXT4-fs (sdX): mounted filesystem`` line.  A peer that cannot be built or does not
mount its root stays in the report with the reason (``error``).

Also once per round (``--paths``), the agent's other paths with the first compression:
the NBD transport (the image built with ``--transport nbd``) and UEFI firmware (OVMF,
LibreELEC's FAT layout), with kernel iSCSI and with NBD.  For every path the report
gives the medians on the kernel clock and, apart, the firmware's part: host seconds from
QEMU's start to the kernel's first console line.

The common clock is the guest kernel's: both inits write their milestones
to ``/dev/kmsg``, so the console shows each with the kernel's timestamp
(seconds since the kernel started).  "Mounted" is the later of the System
and Storage mounts.  The agent's own timeline is relative to its start,
which is placed on the kernel clock as (timestamp of its ``timeline:`` line
minus its total).  ``init_to_first_netlink_s`` is the agent's first netlink call
(its boottime mark, put on the kernel's printk clock through the stamp of its
``timeline:`` line and its ``result`` mark) minus the kernel's "Run /init" stamp.

Also measured: the image sizes (xz and unpacked) of the full initramfs and
of the overlay (with iscsistart, with the native backend only, with the NBD transport), and on
the host the wall time and import time of ``iscsiboot cmdline parse``.

Run as root (tgtd, loop devices)::

    .venv/bin/python benchmarks/boot.py --runs 5 --compression zstd,xz --json --write-readme

``--json`` prints the numbers as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iscsiboot.errors import IscsibootError
from iscsiboot.initramfs import elf, modules
from iscsiboot.initramfs.build import BUSYBOX, ISCSISTART, Compression, build, compress
from iscsiboot.initramfs.cpio import Entry, write_newc
from iscsiboot.initramfs.kernel import KernelTree, default_cache, fetch_kernel
from iscsiboot.output import write_atomic
from iscsiboot.qemu.harness import KERNEL_LINE, Artifacts, HostClock, run_scenario
from iscsiboot.qemu.outcome import find_result
from iscsiboot.qemu.peers import NAMES as PEER_NAMES
from iscsiboot.qemu.peers import PEERS, Peer, build_peer, failure_reason, root_mounted
from iscsiboot.qemu.scenario import Firmware, ScenarioOptions
from iscsiboot.qemu.system import cached_system
from iscsiboot.secret import Secret

# The baseline shell image's own layout (a standard Debian one; the agent's image uses a private prefix).
MULTIARCH = "usr/lib/x86_64-linux-gnu"
LOADER = "ld-linux-x86-64.so.2"

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
MARK = "bench: "  # the shell init's kernel log lines
AGENT = "iscsiboot: "
SHELL_DONE = "bench: mounted"
PHASES = ("config", "modules", "network", "login", "disk", "label", "mount", "handoff")
PARSE_MODULES = ("iscsiboot.cmdline.cli", "iscsiboot.cmdline.parse")
JSON_KEYS = (
    "agent_median_s",
    "shell_median_s",
    "ratio",
    "overlay_xz_bytes",
    "overlay_iscsistart_xz_bytes",
    "full_xz_bytes",
    "agent_first_netlink_s",
    "agent_peak_rss_mib",
    "runs",
    "ratio_xz",
    "init_to_first_netlink_s",
    "peers",
    "overlay_nbd_xz_bytes",
    "paths",
)
RATIO_TARGET = 0.6  # agent/shell, with zstd and with xz
INIT_TO_NETLINK_TARGET = 0.8  # s, from the kernel's "Run /init" to the agent's first netlink call
PEER_TIMEOUT = 480.0  # s: dracut's generic image takes minutes under TCG on a busy host
PEER_COMPRESSION = "zstd"
# The agent's other paths, booted once per round with the first compression: (image transport, firmware).
# "kernel-bios" is the main boot above (the default image, which picks kernel iSCSI at boot).
PATHS: dict[str, tuple[str, Firmware]] = {
    "kernel-bios": ("auto", Firmware.BIOS),
    "nbd-bios": ("nbd", Firmware.BIOS),
    "kernel-uefi": ("auto", Firmware.UEFI),
    "nbd-uefi": ("nbd", Firmware.UEFI),
}
EXTRA_PATHS = tuple(name for name in PATHS if name != "kernel-bios")
_STAMP = re.compile(r"\[\s*(\d+\.\d+)\]\s")

SHELL_INIT = HERE / "shell-init.sh"  # the baseline /init: the OpenELEC-style steps in busybox sh
SHELL_APPLETS = (
    "sh", "mount", "umount", "mkdir", "insmod", "findfs", "blkid", "sleep", "cut", "poweroff", "echo", "cat",
)  # fmt: skip


# ------------------------------------------------------------------ pure parts


def init_started(lines: Sequence[str]) -> float | None:
    """When the kernel, done unpacking the initramfs, started ``/init`` (kernel clock)."""
    for t, text in stamped(lines):
        if text.startswith("Run /init as init process"):
            return t
    return None


def stamped(lines: Sequence[str]) -> list[tuple[float, str]]:
    """(kernel seconds, text) of every kernel-timestamped console line.

    The kernel's copy of an agent line may land inside the agent's own console
    line (``iscsiboot: timeline: ... mou[  8.2] iscsiboot: timeline: ...``): the
    last stamp on a line counts, with the text after it.
    """
    out: list[tuple[float, str]] = []
    for line in lines:
        found = list(_STAMP.finditer(line))
        if found:
            last = found[-1]
            out.append((float(last.group(1)), line[last.end() :].rstrip()))
    return out


def shell_times(lines: Sequence[str]) -> dict[str, float] | None:
    """The shell init's milestones on the kernel clock; None when it did not mount both."""
    marks: dict[str, float] = {}
    for t, text in stamped(lines):
        if text.startswith(MARK):
            name = text[len(MARK) :].split()[0] if text[len(MARK) :].split() else ""
            marks.setdefault(name, t)
    if "mounted" not in marks or "failed:" in marks:
        return None
    init = init_started(lines)
    if init is not None:
        marks["init"] = init
    return marks


def agent_times(lines: Sequence[str]) -> dict[str, Any] | None:
    """The agent's start, mounted time and timeline on the kernel clock (None on failure)."""
    mounted: list[float] = []
    timeline_at: float | None = None
    for t, text in stamped(lines):
        if not text.startswith(AGENT):
            continue
        body = text[len(AGENT) :]
        if body.startswith("mounted ") and ("/storage" in body or "/flash" in body):
            mounted.append(t)
        elif body.startswith("timeline:") and timeline_at is None:
            timeline_at = t
    result = _agent_result(lines)
    if result is None or not result.get("ok") or not mounted or timeline_at is None:
        return None
    timeline = {str(k): float(v) for k, v in dict(result.get("timeline", {})).items()}
    total = float(result.get("total", sum(timeline.values())))
    clock = dict(result.get("clock") or {})
    first = clock.get("first_netlink")
    began = clock.get("agent_start")
    init = init_started(lines)
    on_kernel = kernel_clock(first, clock.get("result"), timeline_at)
    return {
        "mounted": max(mounted),
        "start": timeline_at - total,
        "timeline": timeline,
        "total": total,
        "first_netlink": None if first is None or began is None else float(first) - float(began),
        "peak_rss_mib": _peak(clock),
        "init": init,
        "init_to_first_netlink": None if on_kernel is None or init is None else on_kernel - init,
    }


def kernel_clock(mark: Any, result: Any, timeline_at: float) -> float | None:
    """The agent's boottime ``mark`` on the kernel's printk clock (the console's stamps).

    The agent takes its ``result`` mark just before it prints its ``timeline:`` line, whose
    stamp is ``timeline_at``: their difference is the two clocks' offset (plus the print's
    own few milliseconds, so the shifted mark is never early).
    """
    if mark is None:
        return None
    shift = 0.0 if result is None else timeline_at - float(result)
    return float(mark) + shift


def _peak(clock: dict[str, Any]) -> float | None:
    """PID 1's peak memory plus its network worker's (both run at once)."""
    own, worker = clock.get("peak_rss_mib"), clock.get("worker_peak_rss_mib")
    if own is None:
        return None
    return round(float(own) + float(worker or 0.0), 1)


def _agent_result(lines: Sequence[str]) -> dict[str, Any] | None:
    found = find_result(lines)
    return None if found is None else dict(found.to_dict())


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def summarize(
    agent: Sequence[dict[str, Any]], shell: Sequence[dict[str, float]], runs: int
) -> dict[str, Any]:
    """The medians, their ratio and the agent's median timeline."""
    agent_s = [a["mounted"] for a in agent]
    shell_s = [s["mounted"] for s in shell]
    am, sm = median(agent_s), median(shell_s)
    timeline = {
        phase: round(m, 3)
        for phase in PHASES
        if (m := median([a["timeline"][phase] for a in agent if phase in a["timeline"]])) is not None
    }
    start = median([a["start"] for a in agent])
    return {
        "runs": runs,
        "agent_ok": len(agent_s),
        "shell_ok": len(shell_s),
        "agent_s": [round(x, 3) for x in agent_s],
        "shell_s": [round(x, 3) for x in shell_s],
        "agent_median_s": None if am is None else round(am, 3),
        "shell_median_s": None if sm is None else round(sm, 3),
        "ratio": None if am is None or not sm else round(am / sm, 3),
        "agent_start_median_s": None if start is None else round(start, 3),
        "agent_timeline_median_s": timeline,
        "agent_init_median_s": _rounded(median([a["init"] for a in agent if a.get("init") is not None])),
        "shell_init_median_s": _rounded(median([s["init"] for s in shell if "init" in s])),
        "shell_start_median_s": _rounded(median([s["start"] for s in shell if "start" in s])),
        "agent_first_netlink_s": _rounded(
            median([a["first_netlink"] for a in agent if a.get("first_netlink") is not None])
        ),
        "agent_peak_rss_mib": max((a["peak_rss_mib"] for a in agent if a.get("peak_rss_mib")), default=None),
        "init_to_first_netlink_s": _rounded(
            median([a["init_to_first_netlink"] for a in agent if a.get("init_to_first_netlink") is not None])
        ),
    }


def peer_times(lines: Sequence[str]) -> dict[str, float] | None:
    """A peer's root mounted and ``/init`` started, on the kernel clock; None when it did not mount."""
    mounted = root_mounted(lines)
    if mounted is None:
        return None
    init = init_started(lines)
    return {"mounted": mounted, **({"init": init} if init is not None else {})}


def summarize_peer(
    got: Sequence[dict[str, float]],
    failures: Sequence[str],
    image_bytes: int | None,
    agent_median: dict[str, float | None],
    runs: int,
) -> dict[str, Any]:
    """One peer's report: ``median_s``, ``ratio`` (agent median / peer median), ``image_bytes``.

    ``agent_median``: the agent's median by compression, the first one giving ``ratio``
    (the others ``ratio_<name>``).  With no boot that mounted, ``error`` is the last
    failure's reason (or the build's) and the times are None.
    """
    times = [g["mounted"] for g in got]
    pm = median(times)
    out: dict[str, Any] = {"median_s": _rounded(pm), "ratio": None, "image_bytes": image_bytes}
    if pm is None:
        out["error"] = failures[-1] if failures else "not booted"
        return out
    for i, (name, am) in enumerate(agent_median.items()):
        ratio = None if am is None else round(am / pm, 3)
        out["ratio" if i == 0 else f"ratio_{name}"] = ratio
    out |= {
        "runs_s": [round(t, 3) for t in times],
        "init_median_s": _rounded(median([g["init"] for g in got if "init" in g])),
        "failures": list(failures),
        "runs": runs,
    }
    return out


def summarize_path(
    rows: Sequence[dict[str, Any]], failures: int, shell_median: float | None, image_bytes: int
) -> dict[str, Any]:
    """One of the agent's paths: medians on the kernel clock, and the firmware's host time apart.

    ``ratio``: its median over the shell's (BIOS, kernel iSCSI, the first compression).
    ``firmware_median_s``: host seconds from QEMU's start to the kernel's first line (firmware,
    iPXE, the sanboot and the boot loader reading the kernel and the image: not on the kernel clock).
    """
    mounted = [r["mounted"] for r in rows if "mounted" in r]
    am = median(mounted)
    return {
        "agent_median_s": _rounded(am),
        "ratio": None if am is None or not shell_median else round(am / shell_median, 3),
        "init_to_first_netlink_s": _rounded(
            median([r["init_to_first_netlink"] for r in rows if r.get("init_to_first_netlink") is not None])
        ),
        "init_median_s": _rounded(median([r["init"] for r in rows if r.get("init") is not None])),
        "firmware_median_s": _rounded(
            median([r["firmware_s"] for r in rows if r.get("firmware_s") is not None])
        ),
        "agent_s": [round(x, 3) for x in mounted],
        "failures": failures,
        "image_bytes": image_bytes,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ------------------------------------------------------------------ images


@dataclass
class Sizes:
    rows: dict[str, dict[str, int]] = field(default_factory=dict)


def shell_initramfs(kernel: KernelTree) -> bytes:
    """The baseline image: busybox, iscsistart with its libraries, the agent image's kernel modules."""
    index = modules.load_index(kernel.modules)
    closure = modules.resolve(index, modules.DEFAULT_MODULES)
    start = Path(ISCSISTART).resolve()
    _interp, libs = elf.closure([start])
    entries = [
        *(Entry.directory(d) for d in ("dev", "proc", "sys", "run", "tmp", "etc", "usr", "usr/bin")),
        *(Entry.directory(d) for d in ("usr/lib", MULTIARCH, "lib64", "lib/modules")),
        Entry.symlink("bin", "usr/bin"),
        Entry.symlink("lib", "usr/lib"),
        Entry.symlink(f"lib64/{LOADER}", f"/{MULTIARCH}/{LOADER}"),
        Entry.char("dev/console", 5, 1),
        Entry.char("dev/null", 1, 3, 0o666),
        Entry.file("usr/bin/busybox", Path(BUSYBOX).read_bytes(), 0o755),
        *(Entry.symlink(f"usr/bin/{a}", "busybox") for a in SHELL_APPLETS),
        Entry.file("usr/bin/iscsistart", start.read_bytes(), 0o755),
        *(Entry.file(f"{MULTIARCH}/{lib.soname}", lib.host_path.read_bytes(), 0o755) for lib in libs),
        Entry.file("etc/modules.load", "".join(f"{n}\n" for n in closure.names).encode()),
        *(
            Entry.file(f"usr/lib/modules/{name}.ko", (kernel.modules / rel).read_bytes())
            for name, rel in zip(closure.names, closure.paths, strict=True)
        ),
        Entry.file("init", SHELL_INIT.read_bytes(), 0o755),
    ]
    return write_newc(entries)


def measure_sizes(kernel: KernelTree, cache: Path) -> dict[str, dict[str, int]]:
    """Compressed (xz) and unpacked bytes of the images the project builds."""
    rows: dict[str, dict[str, int]] = {}
    untrimmed = {"lean": False, "optimize": 0}  # the defaults before the trimming
    rows_to_build: tuple[tuple[str, dict[str, Any]], ...] = (
        ("full", {}),
        ("overlay", {"overlay": True}),
        ("overlay_vm_nics", {"overlay": True, "extra_modules": modules.VM_NIC_MODULES}),
        ("overlay_nbd", {"overlay": True, "transport": "nbd"}),
        ("overlay_iscsistart", {"overlay": True, "iscsistart": True}),
        ("full_untrimmed", untrimmed),
        ("overlay_untrimmed", {"overlay": True, **untrimmed}),
    )
    for name, kwargs in rows_to_build:
        res = build(kernel=kernel, cache=cache, compression=Compression.XZ, **kwargs)
        rows[name] = {"xz": res.size, "unpacked": res.uncompressed}
    shell = shell_initramfs(kernel)
    rows["shell"] = {"xz": len(compress(shell, Compression.XZ, x86_code=True)), "unpacked": len(shell)}
    return rows


# ------------------------------------------------------------------ host timings


def host_timings(repeat: int = 5) -> dict[str, float]:
    """Median wall time of ``iscsiboot cmdline parse`` and of importing its module."""
    exe = Path(sys.executable).with_name("iscsiboot")
    argv = [str(exe), "cmdline", "parse", "ip=dhcp boot=ISCSI=auto,LABEL=System disk=LABEL=Storage quiet"]
    walls: list[float] = []
    imports: list[float] = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t)
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {', '.join(PARSE_MODULES)}"],
            check=True,
            capture_output=True,
            text=True,
        )
        imports.append(import_total(done.stderr))
    python = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python.append(time.perf_counter() - t)
    return {
        "cmdline_parse_wall_s": round(float(statistics.median(walls)), 3),
        "cmdline_import_s": round(float(statistics.median(imports)), 3),
        "python_startup_s": round(float(statistics.median(python)), 3),
    }


def import_total(importtime: str) -> float:
    """Seconds spent importing the top-level ``iscsiboot`` modules in ``-X importtime`` output."""
    total_us = 0
    for line in importtime.splitlines():
        parts = line.split("|")
        # top-level imports only (one space before the name): their cumulative times
        top = len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  ")
        if top and parts[2].strip().startswith("iscsiboot"):
            total_us += int(parts[1].strip())
    return total_us / 1e6


# ------------------------------------------------------------------ booting


def boot_once(
    kind: str,
    kernel: KernelTree,
    initrd: Path,
    system: Path,
    *,
    extra_append: Sequence[str] = (),
    timeout: float = 180.0,
    firmware: Firmware = Firmware.BIOS,
) -> Booted:
    """Boot the sanboot scenario once: the console lines, how QEMU ended, the firmware's time.

    ``extra_append``: words after the scenario's kernel command line (a peer's own).
    Every init but the agent is followed until QEMU exits (the agent's result line ends it).
    ``firmware``: UEFI boots the LibreELEC layout (FAT System), BIOS the seed layout.
    """
    options = ScenarioOptions(
        username="client",
        password=Secret("client-secret1"),
        reverse_username="target",
        reverse_password=Secret("target-secret1"),
        until_exit=kind != "agent",
        timeout=timeout,
        extra_append=tuple(extra_append),
        firmware=firmware,
    )
    artifacts = Artifacts(kernel=kernel.vmlinuz, initrd=initrd, system=system, version=kernel.version)
    clock = HostClock()
    outcome = run_scenario(options, artifacts, progress=clock.progress, console=clock, keep_log=False)
    return Booted(outcome.console.splitlines(), str(getattr(outcome, "reason", "")), clock.first(KERNEL_LINE))


@dataclass
class Booted:
    lines: list[str]
    how: str  # how QEMU's run ended (exited, timeout, ...)
    firmware_s: float | None  # host seconds from QEMU's start to the kernel's first line


def build_peers(
    peers: Sequence[Peer], kernel: KernelTree, cache: Path, say: Any
) -> dict[str, tuple[Path | None, str | None]]:
    """Each peer's image, or the one-line reason it could not be built."""
    out: dict[str, tuple[Path | None, str | None]] = {}
    for peer in peers:
        say(f"peer image ({peer.name})")
        try:
            out[peer.name] = (build_peer(peer.name, kernel, cache / "initramfs"), None)
        except (IscsibootError, OSError) as exc:
            what = getattr(exc, "what", None) or str(exc)
            fix = getattr(exc, "fix", None)
            out[peer.name] = (None, f"not built: {what}" + (f" ({fix})" if fix else ""))
            say(f"{peer.name}: {out[peer.name][1]}")
    return out


def _keep(logs: Path | None, name: str, lines: Sequence[str], failed: bool) -> Path | None:
    """Write a console to ``logs`` (every one), or a failed one to the temporary folder."""
    if logs is None and not failed:
        return None
    folder = logs or Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    keep = folder / f"{'' if logs else 'bench-'}{name}.log"
    keep.write_text("\n".join(lines) + "\n")
    return keep


def boot_rounds(
    runs: int,
    compressions: Sequence[str],
    kernel: KernelTree,
    system: Path,
    *,
    cache: Path,
    say: Any,
    logs: Path | None = None,
    peers: Sequence[Peer] = (),
    paths: Sequence[str] = (),
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Boot agent and shell ``runs`` times per compression, each peer and each of the agent's
    other ``paths`` (:data:`PATHS`) once per round, all interleaved.

    Returns the summaries by compression, the peers' reports and the paths' reports.
    ``logs``: a folder for every boot's console (``agent-zstd-1.log``, ``dracut-1.log``, ...).
    """
    images: dict[str, tuple[Path, Path]] = {}
    for name in compressions:
        how = Compression(name)
        say(f"images ({how.value})")
        agent_img = cache / "initramfs" / f"bench-agent.{how.value}.img"
        build(kernel=kernel, output=agent_img, compression=how, cache=cache)
        shell_img = cache / "initramfs" / f"bench-shell.{how.value}.img"
        write_atomic(shell_img, compress(shell_initramfs(kernel), how, x86_code=True))
        images[name] = (agent_img, shell_img)
    first = compressions[0]
    by_transport: dict[str, Path] = {"auto": images[first][0]}
    for path in paths:
        transport, _firmware = PATHS[path]
        if transport not in by_transport:
            say(f"image ({transport} transport, {first})")
            img = cache / "initramfs" / f"bench-agent-{transport}.{first}.img"
            build(kernel=kernel, output=img, compression=Compression(first), cache=cache, transport=transport)
            by_transport[transport] = img
    path_images = {path: by_transport[PATHS[path][0]] for path in paths}
    peer_images = build_peers(peers, kernel, cache, say)
    got_agent: dict[str, list[dict[str, Any]]] = {c: [] for c in compressions}
    got_shell: dict[str, list[dict[str, float]]] = {c: [] for c in compressions}
    failures: dict[str, list[str]] = {c: [] for c in compressions}
    got_peer: dict[str, list[dict[str, float]]] = {p.name: [] for p in peers}
    peer_failures: dict[str, list[str]] = {p.name: [] for p in peers}
    got_path: dict[str, list[dict[str, Any]]] = {p: [] for p in ("kernel-bios", *paths)}
    path_failures: dict[str, int] = {p: 0 for p in ("kernel-bios", *paths)}
    for i in range(runs):
        for name in compressions:
            for kind, img in zip(("agent", "shell"), images[name], strict=True):
                say(f"boot {i + 1}/{runs}: {kind} ({name})")
                booted = boot_once(kind, kernel, img, system)
                got: Any = agent_times(booted.lines) if kind == "agent" else shell_times(booted.lines)
                keep = _keep(logs, f"{kind}-{name}-{i + 1}", booted.lines, got is None)
                if kind == "agent" and name == first:  # the kernel-bios path
                    _add_path(got_path, path_failures, "kernel-bios", got, booted.firmware_s)
                if got is None:
                    failures[name].append(kind)
                    say(f"{kind} run {i + 1} did not mount System and Storage (console: {keep})")
                    continue
                say(f"{kind}: mounted at {got['mounted']:.2f} s after kernel start")
                (got_agent if kind == "agent" else got_shell)[name].append(got)
        for path in paths:
            _transport, firmware = PATHS[path]
            say(f"boot {i + 1}/{runs}: agent, {path} ({first})")
            booted = boot_once("agent", kernel, path_images[path], system, firmware=firmware, timeout=240.0)
            got = agent_times(booted.lines)
            keep = _keep(logs, f"agent-{path}-{i + 1}", booted.lines, got is None)
            _add_path(got_path, path_failures, path, got, booted.firmware_s)
            if got is None:
                say(f"agent ({path}) run {i + 1} did not mount System and Storage (console: {keep})")
                continue
            say(
                f"agent ({path}): mounted at {got['mounted']:.2f} s after kernel start,"
                f" firmware {booted.firmware_s} s"
            )
        for peer in peers:
            image, _error = peer_images[peer.name]
            if image is None:
                continue
            say(f"boot {i + 1}/{runs}: {peer.name} ({PEER_COMPRESSION})")
            booted = boot_once(
                peer.name, kernel, image, system, extra_append=peer.append(), timeout=PEER_TIMEOUT
            )
            times = peer_times(booted.lines)
            keep = _keep(logs, f"{peer.name}-{i + 1}", booted.lines, times is None)
            if times is None:
                peer_failures[peer.name].append(failure_reason(booted.lines, booted.how))
                say(f"{peer.name} run {i + 1}: {peer_failures[peer.name][-1]} (console: {keep})")
                continue
            say(f"{peer.name}: root mounted at {times['mounted']:.2f} s after kernel start")
            got_peer[peer.name].append(times)
    out: dict[str, dict[str, Any]] = {}
    for name in compressions:
        row = summarize(got_agent[name], got_shell[name], runs)
        row["failures"] = failures[name]
        row["initrd_bytes"] = {
            "agent": images[name][0].stat().st_size,
            "shell": images[name][1].stat().st_size,
        }
        out[name] = row
    agent_median = {name: out[name]["agent_median_s"] for name in compressions}
    peer_out: dict[str, dict[str, Any]] = {}
    for peer in peers:
        image, error = peer_images[peer.name]
        if image is None:
            peer_out[peer.name] = {"median_s": None, "ratio": None, "image_bytes": None, "error": error}
            continue
        peer_out[peer.name] = summarize_peer(
            got_peer[peer.name], peer_failures[peer.name], image.stat().st_size, agent_median, runs
        )
        peer_out[peer.name]["compression"] = PEER_COMPRESSION
    path_out: dict[str, dict[str, Any]] = {}
    if paths:
        images_by_path = {"kernel-bios": images[first][0], **path_images}
        for path, rows in got_path.items():
            path_out[path] = summarize_path(
                rows, path_failures[path], out[first]["shell_median_s"], images_by_path[path].stat().st_size
            )
    return out, peer_out, path_out


def _add_path(
    got: dict[str, list[dict[str, Any]]],
    failed: dict[str, int],
    path: str,
    times: Any,
    firmware_s: float | None,
) -> None:
    if times is None:
        failed[path] += 1
        if firmware_s is not None:  # the firmware's time counts even when the agent failed later
            got[path].append({"firmware_s": firmware_s})
        return
    got[path].append({**times, "firmware_s": firmware_s})


def run(
    runs: int,
    cache: Path,
    compressions: Sequence[str] = ("xz",),
    *,
    progress: bool = True,
    logs: Path | None = None,
    peers: Sequence[Peer] = PEERS,
    paths: Sequence[str] = EXTRA_PATHS,
) -> dict[str, Any]:
    def say(text: str) -> None:
        if progress:
            sys.stderr.write(f"bench: {text}\n")
            sys.stderr.flush()

    kernel = fetch_kernel(cache)
    system = cached_system(cache / "system")
    by, peer_out, path_out = boot_rounds(
        runs, compressions, kernel, system, cache=cache, say=say, logs=logs, peers=peers, paths=paths
    )
    out: dict[str, Any] = dict(by[compressions[0]])
    out["compression"] = compressions[0]
    out["by_compression"] = by
    out["ratio_xz"] = by["xz"]["ratio"] if "xz" in by else None
    out["peers"] = peer_out
    out["paths"] = path_out
    say("image sizes")
    sizes = measure_sizes(kernel, cache)
    out["sizes"] = sizes
    out["overlay_xz_bytes"] = sizes["overlay"]["xz"]
    out["overlay_iscsistart_xz_bytes"] = sizes["overlay_iscsistart"]["xz"]
    out["full_xz_bytes"] = sizes["full"]["xz"]
    out["overlay_nbd_xz_bytes"] = sizes["overlay_nbd"]["xz"]
    say("host timings")
    out["host"] = host_timings()
    out["machine"] = machine()
    out["kernel"] = kernel.version
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    host = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {host}, QEMU TCG, Python {platform.python_version()}"


# ------------------------------------------------------------------ README


def mib(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _section(name: str, row: dict[str, Any]) -> list[str]:
    tl = row["agent_timeline_median_s"]
    return [
        f"### Images compressed with {name}",
        "",
        f"Booted images: agent {mib(row['initrd_bytes']['agent'])},"
        f" shell {mib(row['initrd_bytes']['shell'])}.",
        "",
        "| init | median | runs (s) |",
        "|---|---|---|",
        f"| agent | {row['agent_median_s']} s | {', '.join(map(str, row['agent_s']))} |",
        f"| shell | {row['shell_median_s']} s | {', '.join(map(str, row['shell_s']))} |",
        "",
        f"Ratio agent/shell: **{row['ratio']}** (target: at most {RATIO_TARGET})."
        f" Failed boots: {', '.join(row['failures']) or 'none'}.",
        "",
        "Kernel clock, medians: `/init` started (initramfs unpacked) at"
        f" {row['agent_init_median_s']} s (agent image) and {row['shell_init_median_s']} s (shell image);"
        f" the agent's clock started at {row['agent_start_median_s']} s, the shell's first line at"
        f" {row['shell_start_median_s']} s. From the agent's first step to its first netlink call"
        f" (the interfaces going up): {row.get('agent_first_netlink_s')} s (target: at most 0.5 s)."
        " From `/init` starting (the kernel's \"Run /init\" line) to the agent's first netlink call, on"
        f" the kernel's clock: **{row.get('init_to_first_netlink_s')} s**"
        f" (target: at most {INIT_TO_NETLINK_TARGET} s)."
        f" Agent peak memory (VmHWM of PID 1 plus its network worker): {row.get('agent_peak_rss_mib')} MiB.",
        "",
        "| agent phase | median seconds |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in tl.items()),
        "",
    ]


def _peer_cell(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def _peers_section(out: dict[str, Any], by: dict[str, dict[str, Any]]) -> list[str]:
    given: dict[str, dict[str, Any]] = out.get("peers") or {}
    if not given:
        return []
    order = [n for n in PEER_NAMES if n in given] + [n for n in given if n not in PEER_NAMES]
    peers = {n: given[n] for n in order}  # the generators' order, whatever a saved JSON's
    first = out.get("compression") or next(iter(by))
    others = [name for name in by if name != first]
    head = f"| init | root mounted (median) | agent/peer ({first}) |"
    head += "".join(f" agent/peer ({name}) |" for name in others) + " image | runs (s) |"
    rows = []
    for name, row in by.items():
        rows.append(
            f"| agent ({name}) | {row['agent_median_s']} s (System and Storage) | |"
            + "".join(" |" for _ in others)
            + f" {mib(row['initrd_bytes']['agent'])} | {', '.join(map(str, row['agent_s']))} |"
        )
    for name, peer in peers.items():
        if peer.get("median_s") is None:
            rows.append(
                f"| {name} | not mounted | - |"
                + "".join(" - |" for _ in others)
                + f" {mib(peer['image_bytes']) if peer.get('image_bytes') else '-'} | - |"
            )
            continue
        rows.append(
            f"| {name} | {peer['median_s']} s | **{_peer_cell(peer.get('ratio'))}** |"
            + "".join(f" {_peer_cell(peer.get(f'ratio_{o}'))} |" for o in others)
            + f" {mib(peer['image_bytes'])} | {', '.join(map(str, peer.get('runs_s', [])))} |"
        )
    errors = [f"- `{name}`: {peer['error']}" for name, peer in peers.items() if peer.get("error")]
    partial = [
        f"- `{name}`: {len(peer['failures'])} of {peer.get('runs')} boots did not mount"
        f" (last: {peer['failures'][-1]})"
        for name, peer in peers.items()
        if not peer.get("error") and peer.get("failures")
    ]
    inits = ", ".join(
        f"{name} {peer['init_median_s']} s"
        for name, peer in peers.items()
        if peer.get("init_median_s") is not None
    )
    return [
        "### Distribution peers",
        "",
        "The two generators distributions ship for an iSCSI root, each built by its own tool from",
        "Debian 12's packages for the same kernel (its modules from the project's kernel cache, in a",
        "private mount namespace), booting the same sanboot scenario from the iBFT, once per round",
        "between the agent's and the shell's boots: `initramfs-tools` (`mkinitramfs`, Debian's defaults:",
        "`MODULES=most`, busybox, zstd; open-iscsi's hook; kernel parameters `boot=local",
        "root=LABEL=System rootfstype=ext4 iscsi_auto`) and `dracut` (`--no-hostonly --compress zstd",
        "--add 'network-legacy iscsi'`, with systemd in the image as Debian's dracut puts it there;",
        "`rd.iscsi.firmware=1 rd.neednet=1 ip=ibft`, root likewise; Debian's dracut 059 needs gawk as",
        "the host's awk and open-iscsi's `startup-checks.sh` added with `--install` to boot from the iBFT).",
        "A peer's time is its root (System) mounted: the kernel's `EXT4-fs (sdX): mounted filesystem` line;",
        "the agent's is System and Storage both mounted, so the ratios favour the peers.",
        "Ratio agent/peer: the agent's median over the peer's (target: below 1 for every peer).",
        "",
        head,
        "|---|---|---|" + "".join("---|" for _ in others) + "---|---|",
        *rows,
        "",
        *([f"`/init` started (kernel clock, medians): {inits}.", ""] if inits else []),
        *(["Peers that did not boot here:", "", *errors, ""] if errors else []),
        *(["Failed peer boots:", "", *partial, ""] if partial else []),
    ]


def _json_block(out: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {k: out.get(k) for k in JSON_KEYS}
    for key, keep in (
        ("peers", ("median_s", "ratio", "image_bytes", "error")),
        ("paths", ("agent_median_s", "ratio", "init_to_first_netlink_s", "firmware_median_s")),
    ):
        rows = block.get(key)
        if isinstance(rows, dict):
            block[key] = {n: {k: r[k] for k in keep if k in r} for n, r in rows.items()}
    return block


def _paths_section(out: dict[str, Any]) -> list[str]:
    given: dict[str, dict[str, Any]] = out.get("paths") or {}
    if not given:
        return []
    paths = {n: given[n] for n in [*(n for n in PATHS if n in given), *(n for n in given if n not in PATHS)]}
    first = out.get("compression", "zstd")
    rows = [
        f"| {name} | {_peer_cell(p['agent_median_s'], ' s')} | {_peer_cell(p['ratio'])}"
        f" | {_peer_cell(p['init_to_first_netlink_s'], ' s')} | {_peer_cell(p['init_median_s'], ' s')}"
        f" | {_peer_cell(p['firmware_median_s'], ' s')} | {mib(p['image_bytes'])}"
        f" | {', '.join(map(str, p['agent_s']))} | {p['failures']} |"
        for name, p in paths.items()
    ]
    return [
        f"### The agent's paths ({first})",
        "",
        "Every path the project boots, once per round in the same run: kernel iSCSI (the default image,",
        "which picks it at boot) and the NBD transport (the image built with `--transport nbd`: the",
        "agent's NBD daemon, no kernel iSCSI module), under SeaBIOS (seed layout: ext4 System,",
        "extlinux) and OVMF (LibreELEC's layout: FAT System, syslinux.efi). `kernel-bios` is the agent",
        "row above. Mounted and `/init` to first netlink are on the kernel's clock (targets as above:",
        f"at most {RATIO_TARGET} of the shell's median, at most {INIT_TO_NETLINK_TARGET} s). The firmware's",
        "part is not on the kernel's clock and is shown apart: host seconds from QEMU's start to the",
        "kernel's first line (firmware, iPXE, the sanboot, the boot loader reading kernel and image).",
        "",
        "| path | mounted (median) | agent/shell | `/init` to first netlink | `/init` started"
        " | firmware to kernel (host) | image | runs (s) | failed |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def render(out: dict[str, Any], command: str) -> str:
    s = out["sizes"]
    by = out.get("by_compression") or {out.get("compression", "xz"): out}
    lines = [
        "# Boot benchmark",
        "",
        "`benchmarks/boot.py` boots the same sanboot scenario (Debian kernel, iPXE `sanboot` with",
        "mutual CHAP from `tgtd`, the iBFT from iPXE, QEMU TCG) with the boot agent's initramfs and with",
        "a baseline busybox shell init (`iscsistart -N`, `iscsistart -b`, mount by label retried every",
        "second), and in the same run with the initramfs images of Debian's `initramfs-tools` and of",
        "`dracut` (below). Times are on the guest kernel's clock: seconds from kernel start until System and",
        "Storage are both mounted. This file is written by the benchmark itself; other QEMU jobs on",
        "the same machine make single runs vary by several seconds, hence the medians.",
        "",
        f"Targets: agent/shell at most {RATIO_TARGET} with zstd (`ratio`: **{out.get('ratio')}**) and with xz"
        f" (`ratio_xz`: **{out.get('ratio_xz')}**), the agent below every distribution peer; from `/init`"
        f" to the agent's first netlink call at most {INIT_TO_NETLINK_TARGET} s"
        f" (`init_to_first_netlink_s`: **{out.get('init_to_first_netlink_s')} s**).",
        "",
        f"Machine: {out['machine']}; kernel {out['kernel']}.",
        "",
        f"Command (as root, with the project's virtual environment's Python): `{command}`",
        "",
        *(line for name, row in by.items() for line in _section(name, row)),
        *_peers_section(out, by),
        *_paths_section(out),
        "### Image sizes",
        "",
        "xz as the builder writes it with `iscsiboot initramfs build --compress xz`, and the unpacked cpio:",
        "",
        "| image | xz | unpacked |",
        "|---|---|---|",
        *(f"| {name} | {mib(r['xz'])} | {mib(r['unpacked'])} |" for name, r in s.items()),
        "",
        "`full` and `overlay` are the defaults (native login backend, no iscsistart; targets: overlay",
        "at most 5 MB); `overlay_iscsistart` is built with `--backend iscsistart` (target: at most",
        "6 MB); `*_untrimmed` are built with `--no-lean --optimize 0`; `shell` is the baseline image",
        "(busybox, iscsistart and its libraries, the full image's kernel modules).  The full image",
        "carries the virtual NICs' drivers (virtio_net, e1000); an overlay carries no NIC driver",
        "unless built with `--module` (its base initramfs or kernel brings them): `overlay_vm_nics`",
        "is the overlay with the full image's NIC drivers; `overlay_nbd` is the overlay built with",
        "`--transport nbd` (the NBD client's modules and the agent's NBD daemon, no kernel iSCSI).",
        "",
        "Host (median of 5): `iscsiboot cmdline parse` wall time "
        f"{out['host']['cmdline_parse_wall_s']} s, its import time {out['host']['cmdline_import_s']} s,"
        f" bare Python start {out['host']['python_startup_s']} s.",
        "",
        "```json",
        json.dumps(_json_block(out), indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="boots of each kind (default 3)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--write-readme", action="store_true", help=f"rewrite {README.name} with the numbers")
    parser.add_argument(
        "--compression",
        default="xz",
        help="comma-separated compressions of both booted images, e.g. xz,zstd"
        " (default xz, the builder's default); the first one gives the top-level numbers",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEER_NAMES),
        help="comma-separated distribution peers booted once per round"
        f" (default {','.join(PEER_NAMES)}; 'none' for none)",
    )
    parser.add_argument(
        "--paths",
        default=",".join(EXTRA_PATHS),
        help="comma-separated other paths of the agent booted once per round"
        f" (default {','.join(EXTRA_PATHS)}; 'none' for none)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default ~/.cache/iscsiboot)")
    parser.add_argument("--logs", type=Path, default=None, metavar="DIR", help="keep each console in DIR")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="no boots: render an earlier --json run's numbers (with --write-readme: rewrite the README)",
    )
    return parser


def pick(
    parser: argparse.ArgumentParser, option: str, value: str, choices: Sequence[str], *, none: bool = True
) -> list[str]:
    """The names of a comma-separated option, each once, in the order given; ``none``: may be 'none'."""
    if none and value.strip() == "none":
        return []
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if (not none and not names) or any(n not in choices for n in names):
        tail = ", or none" if none else ""
        parser.error(f"{option} takes a comma-separated list of {', '.join(choices)}{tail}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        text = render(saved, str(saved.get("command", "python benchmarks/boot.py")))
        if args.write_readme:
            README.write_text(text)
        print(text)
        return 0
    known = sorted(c.value for c in Compression)
    compressions = pick(parser, "--compression", args.compression, known, none=False)
    wanted = pick(parser, "--peers", args.peers, PEER_NAMES)
    peers = [peer for peer in PEERS if peer.name in wanted]
    paths = pick(parser, "--paths", args.paths, EXTRA_PATHS)
    out = run(
        args.runs,
        args.cache or default_cache(),
        compressions,
        logs=args.logs,
        peers=peers,
        paths=paths,
    )
    words = list(argv if argv is not None else sys.argv[1:])
    if "--logs" in words:  # where the consoles went is not part of the measurement
        at = words.index("--logs")
        del words[at : at + 2]
    words = [w for w in words if not w.startswith("--logs=")]
    command = "python benchmarks/boot.py " + " ".join(words)
    if args.write_readme:
        README.write_text(render(out, command.strip()))
    if args.json:
        print(json.dumps({"command": command.strip(), **out}, indent=1, sort_keys=True))
    else:
        print(render(out, command.strip()))
    return 0 if out["agent_median_s"] is not None and out["shell_median_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
