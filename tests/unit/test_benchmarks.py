"""The pure parts of benchmarks/boot.py: console parsing, medians and ratio, JSON keys, README text."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "boot.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_boot", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_boot"] = module
    spec.loader.exec_module(module)
    return module


boot = _load()

# console lines as a sanboot run printed them (shortened)
SHELL_CONSOLE = """\
[    2.489941] Run /init as init process
[    2.673610] bench: start
[    4.216503] bench: modules
[    4.382151] bench: network
[    6.211708] bench: login
[    7.583376] EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.
[    7.854816] bench: mounted uptime=7.82
""".splitlines()

RESULT = {
    "ok": True,
    "phase": "done",
    "timeline": {"config": 0.706, "modules": 1.84, "network": 0.553, "login": 1.57, "disk": 0.192,
                 "label": 0.066, "mount": 0.5, "handoff": 0.01},
    "total": 5.45,
    "clock": {"agent_start": 6.8, "first_netlink": 7.25, "result": 12.67, "peak_rss_mib": 23.3},
}  # fmt: skip
AGENT_CONSOLE = [
    "[    6.021196] Run /init as init process",
    "iscsiboot: mounted /dev/sda1 on /flash (ro)",
    "[   12.268239] iscsiboot: mounted /dev/sda1 on /flash (ro)",
    "[   12.384361] iscsiboot: mounted /flash/SYSTEM on /sysroot (ro)",
    "[   12.649580] iscsiboot: mounted /dev/sda2 on /storage (rw)",
    "[   12.669703] iscsiboot: timeline: config 0.71 s, modules 1.84 s (total 5.45 s)",
    "ISCSIBOOT-RESULT " + json.dumps(RESULT),
]


def test_shell_milestones_on_the_kernel_clock() -> None:
    marks = boot.shell_times(SHELL_CONSOLE)
    assert marks == {"start": 2.67361, "modules": 4.216503, "network": 4.382151, "login": 6.211708,
                     "mounted": 7.854816, "init": 2.489941}  # fmt: skip


def test_shell_failure_or_no_mount_gives_none() -> None:
    assert boot.shell_times(SHELL_CONSOLE[:5]) is None
    failed = [*SHELL_CONSOLE[:4], "[    9.000000] bench: failed: iscsistart -b"]
    assert boot.shell_times(failed) is None


def test_agent_mounted_is_the_later_of_system_and_storage() -> None:
    got = boot.agent_times(AGENT_CONSOLE)
    assert got is not None
    assert got["mounted"] == pytest.approx(12.64958)
    assert got["start"] == pytest.approx(12.669703 - 5.45)
    assert got["timeline"]["modules"] == pytest.approx(1.84)
    assert got["init"] == pytest.approx(6.021196)
    assert got["first_netlink"] == pytest.approx(0.45) and got["peak_rss_mib"] == 23.3
    with_worker = [
        line.replace('"peak_rss_mib": 23.3', '"peak_rss_mib": 23.3, "worker_peak_rss_mib": 20.1')
        for line in AGENT_CONSOLE
    ]
    assert boot.agent_times(with_worker)["peak_rss_mib"] == 43.4  # PID 1 and its network worker at once


def test_agent_line_cut_by_its_kernel_copy_still_counts() -> None:
    """Seen under TCG: the kernel printed its copy of the timeline line inside the console copy."""
    cut = [
        *AGENT_CONSOLE[:5],
        "iscsiboot: timeline: config 0.71 s, mou"
        "[   12.669703] iscsiboot: timeline: config 0.71 s (total 5.45 s)",
        AGENT_CONSOLE[-1],
    ]
    got = boot.agent_times(cut)
    assert got is not None and got["start"] == pytest.approx(12.669703 - 5.45)


def test_agent_failure_gives_none() -> None:
    failed = {**RESULT, "ok": False, "phase": "login"}
    lines = [*AGENT_CONSOLE[:-1], "ISCSIBOOT-RESULT " + json.dumps(failed)]
    assert boot.agent_times(lines) is None
    assert boot.agent_times(AGENT_CONSOLE[:-1]) is None  # no result line at all


def test_summary_medians_ratio_and_json_keys() -> None:
    agent = [
        {"mounted": m, "start": 7.0, "timeline": {"login": t}, "total": 5.0}
        for m, t in ((12.0, 1.0), (10.0, 3.0), (11.0, 2.0))
    ]
    shell = [{"mounted": m, "start": 2.5} for m in (8.0, 9.0, 7.0)]
    out = boot.summarize(agent, shell, 3)
    assert out["agent_median_s"] == 11.0
    assert out["shell_median_s"] == 8.0
    assert out["ratio"] == pytest.approx(11.0 / 8.0, abs=1e-3)
    assert out["agent_timeline_median_s"] == {"login": 2.0}
    assert out["shell_start_median_s"] == 2.5 and out["agent_init_median_s"] is None
    assert out["runs"] == 3
    assert boot.summarize([], shell, 3)["ratio"] is None
    assert out["init_to_first_netlink_s"] is None  # no agent boot carried the marks
    out |= {"overlay_xz_bytes": 1, "full_xz_bytes": 2, "overlay_iscsistart_xz_bytes": 3}
    out |= {"ratio_xz": 0.9, "peers": {}, "paths": {}, "overlay_nbd_xz_bytes": 4}  # run() adds these
    assert set(boot.JSON_KEYS) <= set(out)
    assert {"agent_median_s", "shell_median_s", "ratio", "overlay_xz_bytes", "full_xz_bytes", "runs"} <= set(
        boot.JSON_KEYS
    )
    assert {"ratio_xz", "init_to_first_netlink_s", "peers"} <= set(boot.JSON_KEYS)


def test_import_total_counts_top_level_iscsiboot_imports() -> None:
    text = """import time: self [us] | cumulative | imported package
import time:       200 |        200 |   iscsiboot.model
import time:       300 |       1500 | iscsiboot.cmdline.cli
import time:       100 |       2500 | iscsiboot.cmdline.parse
import time:        50 |         50 | json
"""
    assert boot.import_total(text) == pytest.approx(0.004)


def _rendered_input() -> dict[str, object]:
    out: dict[str, object] = boot.summarize(
        [
            {
                "mounted": 10.0,
                "start": 7.0,
                "timeline": {"login": 1.0},
                "total": 3.0,
                "first_netlink": 0.42,
                "peak_rss_mib": 23.5,
            }
        ],
        [{"mounted": 8.0, "start": 2.5}],
        1,
    )
    out |= {
        "failures": [],
        "sizes": {"full": {"xz": 9_000_000, "unpacked": 40_000_000}},
        "overlay_xz_bytes": 8_000_000,
        "full_xz_bytes": 9_000_000,
        "overlay_iscsistart_xz_bytes": 9_500_000,
        "host": {"cmdline_parse_wall_s": 0.2, "cmdline_import_s": 0.05, "python_startup_s": 0.02},
        "machine": "test machine",
        "kernel": "6.1.0-test",
        "compression": "xz",
        "initrd_bytes": {"agent": 9_000_000, "shell": 2_000_000},
    }
    return out


def test_readme_render_names_command_and_numbers() -> None:
    text = boot.render(_rendered_input(), "python benchmarks/boot.py --runs 1")
    assert "python benchmarks/boot.py --runs 1" in text
    assert "| agent | 10.0 s |" in text and "| shell | 8.0 s |" in text
    assert "1.25" in text  # the ratio
    assert "9.00 MB" in text
    assert "first netlink call (the interfaces going up): 0.42 s" in text
    assert "(VmHWM of PID 1 plus its network worker): 23.5 MiB" in text


def test_from_json_renders_a_saved_run_without_booting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"command": "python benchmarks/boot.py --runs 7", **_rendered_input()}))
    assert boot.main(["--from-json", str(saved)]) == 0
    text = capsys.readouterr().out
    assert "`python benchmarks/boot.py --runs 7`" in text and "| agent | 10.0 s |" in text


def test_image_sizes_are_measured_with_xz_whatever_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The size targets are xz sizes; the builder's own default is zstd."""
    seen: list[dict[str, object]] = []

    class Built:
        size, uncompressed = 5, 50

    def fake_build(**kwargs: object) -> Built:
        seen.append(kwargs)
        return Built()

    monkeypatch.setattr(boot, "build", fake_build)
    monkeypatch.setattr(boot, "shell_initramfs", lambda kernel: b"070701")
    rows = boot.measure_sizes(object(), tmp_path)
    assert {"full", "overlay", "overlay_iscsistart", "shell"} <= set(rows)
    assert seen and all(k["compression"] is boot.Compression.XZ for k in seen)
    assert any(k.get("iscsistart") is True for k in seen)


# ------------------------------------------------------------------ the kernel clock and the peers


def test_init_to_first_netlink_is_on_the_kernel_clock() -> None:
    """The agent's boottime mark, shifted by (timeline stamp - result mark), minus "Run /init"."""
    got = boot.agent_times(AGENT_CONSOLE)
    assert got is not None
    shift = 12.669703 - 12.67  # the timeline line's stamp against the agent's result mark
    assert got["init_to_first_netlink"] == pytest.approx(7.25 + shift - 6.021196)
    assert boot.summarize([got], [], 1)["init_to_first_netlink_s"] == pytest.approx(1.229, abs=1e-3)
    no_init = [line for line in AGENT_CONSOLE if "Run /init" not in line]
    assert boot.agent_times(no_init)["init_to_first_netlink"] is None


def test_kernel_clock_shift_when_boottime_runs_ahead() -> None:
    # recorded: timeline stamped 10.816756, result mark 10.859, first netlink 6.636
    assert boot.kernel_clock(6.636, 10.859, 10.816756) == pytest.approx(6.636 - 0.042244)
    assert boot.kernel_clock(None, 10.859, 10.816756) is None
    assert boot.kernel_clock(6.636, None, 10.816756) == 6.636  # no result mark: taken as it is


# initramfs-tools (open-iscsi's iscsi_auto) as it booted here, shortened
ITOOLS_CONSOLE = """[    5.161494] Run /init as init process
Begin: Mounting root file system ... Begin: Running /scripts/local-top ... [    9.962846] iBFT detected.
iscsistart: Connection1:0 to [target: iqn.2026-11.org.iscsiboot:htpc, ...] is operational now
[   12.230094]  sda: sda1 sda2
[   14.824591] EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.
Target filesystem doesn't have requested /sbin/init.
No init found. Try passing init= bootarg.
Rebooting automatically due to panic= boot argument
[   16.060933] reboot: machine restart
""".splitlines()

# dracut (systemd, network-legacy, iscsi) as it booted here, shortened, colours kept
DRACUT_CONSOLE = [
    "[   20.421749] Run /init as init process",
    "[  101.275776]  sda: sda1 sda2",
    "         Mounting \x1b[0;1;39msysroot.mount\x1b[0m - /sysroot...",
    "[  126.584518] EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
    "[\x1b[0;1;31mFAILED\x1b[0m] Failed to start \x1b[0;1;39minitrd-switch-root.service\x1b[0m - Switch Root",
    "[  136.372212] EXT4-fs (sda1): unmounting filesystem.",
    "[  142.310702] reboot: machine restart",
]


def test_peer_root_mounted_from_the_kernel_line() -> None:
    assert boot.peer_times(ITOOLS_CONSOLE) == {"mounted": 14.824591, "init": 5.161494}
    assert boot.peer_times(DRACUT_CONSOLE) == {"mounted": 126.584518, "init": 20.421749}
    assert boot.peer_times(ITOOLS_CONSOLE[:4]) is None  # logged in, never mounted
    # the kernel's copy landing inside a console line still counts (the last stamp)
    cut = ["Begin: Running /scripts/local-premount ... [   14.8] EXT4-fs (sdb1): mounted filesystem x"]
    assert boot.root_mounted(cut) == 14.8
    assert boot.root_mounted(["[    3.0] EXT4-fs (vda1): mounted filesystem"]) is None  # not an iSCSI disk


def test_peer_failure_reason_is_one_line() -> None:
    peers = sys.modules["iscsiboot.qemu.peers"]
    reason = peers.failure_reason(
        [*ITOOLS_CONSOLE[:4], "ALERT!  LABEL=System does not exist.  Dropping"], "timeout"
    )
    assert reason == "root not mounted (QEMU timeout): ALERT!  LABEL=System does not exist.  Dropping"
    assert "\n" not in reason
    dracut = peers.failure_reason(DRACUT_CONSOLE[:3] + DRACUT_CONSOLE[4:5], "exited")
    assert dracut.startswith("root not mounted (QEMU exited): [FAILED] Failed to start initrd-switch-root")
    assert peers.failure_reason([], "exited") == "root not mounted (QEMU exited)"


def test_peer_summary_ratio_image_and_error() -> None:
    got = [{"mounted": m, "init": 5.0} for m in (14.0, 16.0, 15.0)]
    out = boot.summarize_peer(
        got, ["root not mounted (QEMU timeout)"], 31_000_000, {"zstd": 6.0, "xz": 7.5}, 4
    )
    assert out["median_s"] == 15.0 and out["image_bytes"] == 31_000_000
    assert out["ratio"] == 0.4 and out["ratio_xz"] == 0.5  # the agent's median over the peer's
    assert out["runs_s"] == [14.0, 16.0, 15.0] and out["init_median_s"] == 5.0
    assert "error" not in out and out["failures"] == ["root not mounted (QEMU timeout)"]
    failed = boot.summarize_peer(
        [], ["root not mounted (QEMU exited): no init"], 46_000_000, {"zstd": 6.0}, 3
    )
    assert failed == {
        "median_s": None,
        "ratio": None,
        "image_bytes": 46_000_000,
        "error": "root not mounted (QEMU exited): no init",
    }


def test_peer_command_lines() -> None:
    peers = sys.modules["iscsiboot.qemu.peers"]
    itools, dracut = (peers.Peer(n) for n in peers.NAMES)
    assert itools.append() == ("boot=local", "root=LABEL=System", "rootfstype=ext4", "iscsi_auto")
    assert {"rd.iscsi.firmware=1", "ip=ibft", "rd.neednet=1", "root=LABEL=System"} <= set(dracut.append())
    assert dracut.append("Sys2")[0] == "root=LABEL=Sys2"


def test_peer_tool_argv(tmp_path: Path) -> None:
    peers = sys.modules["iscsiboot.qemu.peers"]

    class Kernel:
        version = "6.1.0-test"

    argv = peers.tool_argv(peers.INITRAMFS_TOOLS, Kernel(), tmp_path / "out.img", tmp_path)
    assert argv == ["mkinitramfs", "-d", str(tmp_path / "initramfs-tools"), "-o", str(tmp_path / "out.img"),
                    "6.1.0-test"]  # fmt: skip
    conf = (tmp_path / "initramfs-tools" / "initramfs.conf").read_text()
    assert "MODULES=most" in conf and "COMPRESS=zstd" in conf
    assert (tmp_path / "initramfs-tools" / "scripts" / "local-top").is_dir()
    argv = peers.tool_argv(peers.DRACUT, Kernel(), tmp_path / "d.img", tmp_path)
    assert argv[0] == "dracut" and argv[-3:] == ["--kver", "6.1.0-test", str(tmp_path / "d.img")]
    assert "network-legacy iscsi" in argv and "--no-hostonly" in argv


def test_readme_shows_peers_targets_and_errors() -> None:
    out = _rendered_input()
    out |= {
        "ratio_xz": 0.7,
        "peers": {
            "initramfs-tools": boot.summarize_peer([{"mounted": 20.0}], [], 31_000_000, {"xz": 10.0}, 1),
            "dracut": {"median_s": None, "ratio": None, "image_bytes": None, "error": "not built: no dracut"},
        },
    }
    out["init_to_first_netlink_s"] = 0.75
    text = boot.render(out, "python benchmarks/boot.py --runs 1")
    assert "### Distribution peers" in text
    assert "| initramfs-tools | 20.0 s | **0.5** |" in text and "31.00 MB" in text
    assert "| dracut | not mounted |" in text and "- `dracut`: not built: no dracut" in text
    assert "(`ratio_xz`: **0.7**)" in text and "(`init_to_first_netlink_s`: **0.75 s**)" in text
    assert "target: at most 0.6" in text
    block = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    assert block["peers"]["dracut"] == {"median_s": None, "ratio": None, "image_bytes": None,
                                        "error": "not built: no dracut"}  # fmt: skip
    assert set(block["peers"]["initramfs-tools"]) == {"median_s", "ratio", "image_bytes"}
    assert {"ratio_xz", "init_to_first_netlink_s", "peers"} <= set(block)


def test_peers_option(monkeypatch: pytest.MonkeyPatch) -> None:
    assert boot.build_parser().parse_args([]).peers == "initramfs-tools,dracut"
    seen: dict[str, object] = {}

    def fake_run(runs: int, cache: Path, compressions: list[str], **kwargs: object) -> dict[str, object]:
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(boot, "run", fake_run)
    with pytest.raises(SystemExit):
        boot.main(["--peers", "dracut"])
    assert [p.name for p in seen["peers"]] == ["dracut"]  # type: ignore[attr-defined]
    with pytest.raises(SystemExit):
        boot.main(["--peers", "none"])
    assert seen["peers"] == []
    with pytest.raises(SystemExit) as exc:
        boot.main(["--peers", "genkernel"])
    assert exc.value.code == 2


def test_path_summary_keeps_the_firmware_apart() -> None:
    rows = [
        {"mounted": 12.0, "init": 4.0, "init_to_first_netlink": 0.7, "firmware_s": 9.5},
        {"mounted": 14.0, "init": 4.2, "init_to_first_netlink": 0.9, "firmware_s": 10.5},
        {"firmware_s": 10.0},  # the agent failed after the kernel started
    ]
    out = boot.summarize_path(rows, 1, 20.0, 6_000_000)
    assert out["agent_median_s"] == 13.0 and out["ratio"] == 0.65
    assert out["init_to_first_netlink_s"] == 0.8 and out["init_median_s"] == 4.1
    assert out["firmware_median_s"] == 10.0  # host seconds, every boot that reached the kernel
    assert out["agent_s"] == [12.0, 14.0] and out["failures"] == 1 and out["image_bytes"] == 6_000_000
    assert boot.summarize_path([], 3, None, 1)["ratio"] is None


def test_host_clock_times_the_kernel_line_from_qemu_start(monkeypatch: pytest.MonkeyPatch) -> None:
    now = iter([100.0, 103.5, 109.25])
    monkeypatch.setattr(boot.time, "monotonic", lambda: next(now))
    clock = boot.HostClock()
    clock.progress("disk image (System, Storage)")  # not QEMU's start
    clock.progress("boot QEMU (TCG, sanboot)")
    clock.write("iPXE 1.21.1+ -- Open Source Network Boot Firmware\n")
    clock.write("[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org)\n")
    assert clock.first(boot.KERNEL_LINE) == 9.25
    assert boot.HostClock().first(boot.KERNEL_LINE) is None  # QEMU never started


def test_readme_shows_the_paths() -> None:
    out = _rendered_input()
    bios = {"mounted": 10.0, "init_to_first_netlink": 0.6, "firmware_s": 8.0}
    uefi = {"mounted": 11.0, "init_to_first_netlink": 0.7, "firmware_s": 21.0}
    out["paths"] = {
        "kernel-bios": boot.summarize_path([bios], 0, 8.0, 9_000_000),
        "nbd-uefi": boot.summarize_path([uefi], 0, 8.0, 8_000_000),
    }
    text = boot.render(out, "python benchmarks/boot.py --runs 1")
    assert "### The agent's paths (xz)" in text
    assert "| nbd-uefi | 11.0 s | 1.375 | 0.7 s | - | 21.0 s | 8.00 MB | 11.0 | 0 |" in text
    block = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    assert block["paths"]["nbd-uefi"]["firmware_median_s"] == 21.0


def test_paths_option(monkeypatch: pytest.MonkeyPatch) -> None:
    assert boot.build_parser().parse_args([]).paths == "nbd-bios,kernel-uefi,nbd-uefi"
    seen: dict[str, object] = {}

    def fake_run(runs: int, cache: Path, compressions: list[str], **kwargs: object) -> dict[str, object]:
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(boot, "run", fake_run)
    with pytest.raises(SystemExit):
        boot.main(["--paths", "kernel-uefi,kernel-uefi"])
    assert seen["paths"] == ["kernel-uefi"]
    with pytest.raises(SystemExit):
        boot.main(["--paths", "none"])
    assert seen["paths"] == []
    with pytest.raises(SystemExit) as exc:
        boot.main(["--paths", "kernel-bios"])  # the main boot already is that path
    assert exc.value.code == 2
