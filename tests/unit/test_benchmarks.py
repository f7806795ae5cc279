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
    out |= {"overlay_xz_bytes": 1, "full_xz_bytes": 2, "overlay_iscsistart_xz_bytes": 3}
    assert set(boot.JSON_KEYS) <= set(out)
    assert {"agent_median_s", "shell_median_s", "ratio", "overlay_xz_bytes", "full_xz_bytes", "runs"} <= set(
        boot.JSON_KEYS
    )


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
