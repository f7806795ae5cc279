#!/usr/bin/env python3
"""Boot speed and footprint of the boot agent, compared with a busybox shell init.

In one run, the same kernel, disk image layout, target and QEMU settings
(iPXE ``sanboot`` with mutual CHAP, the iBFT from iPXE) boot ``--runs``
times each with

* ``agent``: the project's initramfs (Python and the boot agent), and
* ``shell``: a busybox ``/init`` that loads the same kernel modules, runs
  ``iscsistart -N`` and ``iscsistart -b``, then tries every second to mount
  ``LABEL=System`` and ``LABEL=Storage`` (found with busybox ``findfs``).

The common clock is the guest kernel's: both inits write their milestones
to ``/dev/kmsg``, so the console shows each with the kernel's timestamp
(seconds since the kernel started).  "Mounted" is the later of the System
and Storage mounts.  The agent's own timeline is relative to its start,
which is placed on the kernel clock as (timestamp of its ``timeline:`` line
minus its total).

Also measured: the image sizes (xz and unpacked) of the full initramfs and
of the overlay (with iscsistart and with the native backend only), and on
the host the wall time and import time of ``iscsiboot cmdline parse``.

Run as root (tgtd, loop devices)::

    .venv/bin/python benchmarks/boot.py --runs 5 --write-readme

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

from iscsiboot.initramfs import elf, modules
from iscsiboot.initramfs.build import BUSYBOX, ISCSISTART, Compression, build, compress
from iscsiboot.initramfs.cpio import Entry, write_newc
from iscsiboot.initramfs.kernel import KernelTree, default_cache, fetch_kernel
from iscsiboot.output import write_atomic
from iscsiboot.qemu.harness import Artifacts, run_scenario
from iscsiboot.qemu.outcome import find_result
from iscsiboot.qemu.scenario import ScenarioOptions
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
)
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
    return {
        "mounted": max(mounted),
        "start": timeline_at - total,
        "timeline": timeline,
        "total": total,
        "first_netlink": None if first is None or began is None else float(first) - float(began),
        "peak_rss_mib": _peak(clock),
        "init": init_started(lines),
    }


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


def boot_once(kind: str, kernel: KernelTree, initrd: Path, system: Path) -> list[str]:
    """Boot the sanboot scenario once and return the console lines."""
    options = ScenarioOptions(
        username="client",
        password=Secret("client-secret1"),
        reverse_username="target",
        reverse_password=Secret("target-secret1"),
        until_exit=kind == "shell",
        timeout=180.0,
    )
    artifacts = Artifacts(kernel=kernel.vmlinuz, initrd=initrd, system=system, version=kernel.version)
    outcome = run_scenario(options, artifacts, keep_log=False)
    return outcome.console.splitlines()


def boot_pair(
    runs: int,
    compressions: Sequence[str],
    kernel: KernelTree,
    system: Path,
    *,
    cache: Path,
    say: Any,
    logs: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Boot agent and shell images ``runs`` times per compression (interleaved); summaries by compression.

    ``logs``: a folder for every boot's console (``agent-zstd-1.log``, ...).
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
    got_agent: dict[str, list[dict[str, Any]]] = {c: [] for c in compressions}
    got_shell: dict[str, list[dict[str, float]]] = {c: [] for c in compressions}
    failures: dict[str, list[str]] = {c: [] for c in compressions}
    for i in range(runs):
        for name in compressions:
            for kind, img in zip(("agent", "shell"), images[name], strict=True):
                say(f"boot {i + 1}/{runs}: {kind} ({name})")
                lines = boot_once(kind, kernel, img, system)
                got: Any = agent_times(lines) if kind == "agent" else shell_times(lines)
                if logs is not None or got is None:  # every console with --logs, else a failed one
                    folder = logs or Path(tempfile.gettempdir())
                    folder.mkdir(parents=True, exist_ok=True)
                    keep = folder / f"{'' if logs else 'bench-'}{kind}-{name}-{i + 1}.log"
                    keep.write_text("\n".join(lines) + "\n")
                if got is None:
                    failures[name].append(kind)
                    say(f"{kind} run {i + 1} did not mount System and Storage (console: {keep})")
                    continue
                say(f"{kind}: mounted at {got['mounted']:.2f} s after kernel start")
                (got_agent if kind == "agent" else got_shell)[name].append(got)
    out: dict[str, dict[str, Any]] = {}
    for name in compressions:
        row = summarize(got_agent[name], got_shell[name], runs)
        row["failures"] = failures[name]
        row["initrd_bytes"] = {
            "agent": images[name][0].stat().st_size,
            "shell": images[name][1].stat().st_size,
        }
        out[name] = row
    return out


def run(
    runs: int,
    cache: Path,
    compressions: Sequence[str] = ("xz",),
    progress: bool = True,
    logs: Path | None = None,
) -> dict[str, Any]:
    def say(text: str) -> None:
        if progress:
            sys.stderr.write(f"bench: {text}\n")
            sys.stderr.flush()

    kernel = fetch_kernel(cache)
    system = cached_system(cache / "system")
    by = boot_pair(runs, compressions, kernel, system, cache=cache, say=say, logs=logs)
    out: dict[str, Any] = dict(by[compressions[0]])
    out["compression"] = compressions[0]
    out["by_compression"] = by
    say("image sizes")
    sizes = measure_sizes(kernel, cache)
    out["sizes"] = sizes
    out["overlay_xz_bytes"] = sizes["overlay"]["xz"]
    out["overlay_iscsistart_xz_bytes"] = sizes["overlay_iscsistart"]["xz"]
    out["full_xz_bytes"] = sizes["full"]["xz"]
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
        f"Ratio agent/shell: **{row['ratio']}** (target: at most 0.8)."
        f" Failed boots: {', '.join(row['failures']) or 'none'}.",
        "",
        "Kernel clock, medians: `/init` started (initramfs unpacked) at"
        f" {row['agent_init_median_s']} s (agent image) and {row['shell_init_median_s']} s (shell image);"
        f" the agent's clock started at {row['agent_start_median_s']} s, the shell's first line at"
        f" {row['shell_start_median_s']} s. From the agent's first step to its first netlink call"
        f" (the interfaces going up): {row.get('agent_first_netlink_s')} s (target: at most 0.5 s)."
        f" Agent peak memory (VmHWM of PID 1 plus its network worker): {row.get('agent_peak_rss_mib')} MiB.",
        "",
        "| agent phase | median seconds |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in tl.items()),
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
        "second). Times are on the guest kernel's clock: seconds from kernel start until System and",
        "Storage are both mounted. This file is written by the benchmark itself; other QEMU jobs on",
        "the same machine make single runs vary by several seconds, hence the medians.",
        "",
        f"Machine: {out['machine']}; kernel {out['kernel']}.",
        "",
        f"Command (as root, with the project's virtual environment's Python): `{command}`",
        "",
        *(line for name, row in by.items() for line in _section(name, row)),
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
        "is the overlay with the full image's NIC drivers.",
        "",
        "Host (median of 5): `iscsiboot cmdline parse` wall time "
        f"{out['host']['cmdline_parse_wall_s']} s, its import time {out['host']['cmdline_import_s']} s,"
        f" bare Python start {out['host']['python_startup_s']} s.",
        "",
        "```json",
        json.dumps({k: out[k] for k in JSON_KEYS}, indent=1),
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
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default ~/.cache/iscsiboot)")
    parser.add_argument("--logs", type=Path, default=None, metavar="DIR", help="keep each console in DIR")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="no boots: render an earlier --json run's numbers (with --write-readme: rewrite the README)",
    )
    return parser


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
    compressions = [c.strip() for c in args.compression.split(",") if c.strip()]
    known = {c.value for c in Compression}
    if not compressions or any(c not in known for c in compressions):
        parser.error(f"--compression takes a comma-separated list of {', '.join(sorted(known))}")
    out = run(args.runs, args.cache or default_cache(), list(dict.fromkeys(compressions)), logs=args.logs)
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
