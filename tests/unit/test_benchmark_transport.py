"""The pure parts of benchmarks/transport.py: the test SYSTEM's lines, medians, ratios, the report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "transport.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_transport", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_transport"] = module
    spec.loader.exec_module(module)
    return module


bench = _load()

RESULT = {"ok": True, "phase": "done", "timeline": {}, "total": 2.0, "clock": {"result": 7.5}}


def console(seq: str, rand: str, daemon: str | None) -> str:
    lines = [
        "ISCSIBOOT-RESULT " + json.dumps(RESULT),
        f"ISCSIBOOT-SYSTEM-TEST seqread nbd0 67108864 {seq}",
        f"ISCSIBOOT-SYSTEM-TEST randread nbd0 200 {rand}",
    ]
    if daemon is not None:
        lines.append(f"ISCSIBOOT-SYSTEM-TEST daemon 321 @iscsiboot-nbd_--config-fd {daemon}")
    return "\n".join(lines)


def test_a_boot_s_figures_come_from_its_console() -> None:
    run = bench.parse_run(console("10.00 12.00", "12.00 14.00", "20480"))
    assert (run.mounted_s, run.seq_mib_s, run.rand_iops, run.daemon_rss_mib) == (7.5, 32.0, 100.0, 20.0)
    kernel = bench.parse_run(console("10.00 10.50", "12.00 13.00", None))
    assert kernel.daemon_rss_mib is None and kernel.seq_mib_s == 128.0
    failed = bench.parse_run("no result here")
    assert failed.error == "no result" and failed.seq_mib_s is None


def test_ratios_targets_and_report() -> None:
    found = {
        "kernel": bench.Summary([bench.parse_run(console("10.00 10.50", "12.00 13.00", None))]),
        "nbd": bench.Summary([bench.parse_run(console("10.00 12.00", "12.00 14.00", "20480"))]),
    }
    out = bench.summarize(found, 1)
    assert set(bench.JSON_KEYS) <= set(out)
    assert (out["nbd_seq_ratio"], out["nbd_rand_ratio"], out["daemon_rss_mib"]) == (0.25, 0.5, 20.0)
    assert out["targets_met"] is False  # 0.25x is below the 0.5x target
    found["nbd"] = bench.Summary([bench.parse_run(console("10.00 11.00", "12.00 14.00", "20480"))])
    assert bench.summarize(found, 1)["targets_met"] is True
    text = bench.render(bench.summarize(found, 1), "python benchmarks/transport.py --runs 1")
    assert "| sequential read, 1 MiB O_DIRECT (MiB/s) | 128.0 | 64.0 |" in text
    assert "Failed boots: none." in text


def test_the_command_line_parses() -> None:
    args = bench.build_parser().parse_args(["--runs", "3", "--write-report", "--json"])
    assert (args.runs, args.write_report, args.json) == (3, True, True)
