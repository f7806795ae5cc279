"""PID 1's start-up child (NIC drivers, links) and network worker (pyroute2, the network phase)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.phases import network
from iscsiboot.agent.phases.modules import Loader
from iscsiboot.agent.plan import NetPlan, NetResult
from iscsiboot.agent.startup.netproc import (
    PRIORITY,
    Lines,
    NetWorker,
    WorkerGone,
    encode,
    encode_plain,
)
from iscsiboot.model import NetMode


def test_lines_come_whole_across_reads_and_stop_at_eof() -> None:
    r, w = os.pipe()
    lines = Lines(r)
    try:
        first = encode({"say": "one"})
        os.write(w, first[:5])
        assert lines.next(0.05) is None and not lines.eof  # half a line: nothing yet
        os.write(w, first[5:] + encode({"nics": ["e1000e"]}) + b"not json\n")
        assert lines.next(1) == {"say": "one"}
        assert lines.next(1) == {"nics": ["e1000e"]}
        assert lines.next(1) == {"garbled": "not json"}
        os.close(w)
        w = -1
        assert lines.next(1) is None and lines.eof
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_plan_and_result_cross_as_json() -> None:
    plan = NetPlan(NetMode.STATIC, "eth0", None, 7, "10.0.0.5", 24, "10.0.0.1", ("10.0.0.1",), "htpc")
    assert NetPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    result = NetResult("eth0.7", "eth0", "52:54:00:12:34:56", "static", "10.0.0.5", 24, vlan=7)
    assert NetResult.from_dict({**json.loads(json.dumps(result.to_dict())), "later": 1}) == result


class FakeLoader(Loader):
    """What the worker needs of the module loader: the NIC drivers (the real one: test_agent_modules)."""

    def __init__(self, exit_code: int | None = None, *, hang: bool = False) -> None:
        self.exit_code = exit_code
        self.hang = hang

    def load_nic_drivers(self, deadline: Deadline, *, preloaded: bool = False) -> list[str]:
        if self.exit_code is not None:
            os._exit(self.exit_code)  # the worker dies before it reports
        if self.hang:
            time.sleep(120)  # a module load that never returns
        return ["virtio_pci", "virtio_net"]


OFF = NetPlan(NetMode.OFF, None, None, None)


def test_worker_reports_its_start_and_the_phase_error(tmp_path: Path) -> None:
    worker = NetWorker.start(FakeLoader(), dhcp=False, sysfs=str(tmp_path))
    assert worker.wait_nics(30)
    assert worker.nics == ["virtio_pci", "virtio_net"] and worker.links == {}
    assert worker.first_netlink is not None
    assert "NIC drivers loaded (virtio_pci, virtio_net) +" in worker.timeline()
    if os.geteuid() == 0:  # only root may raise a priority: PID 1 is root
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == PRIORITY
    said: list[str] = []
    with pytest.raises(PhaseError) as caught:
        worker.bring_up(OFF, Deadline(30), said.append)
    assert caught.value.phase == "network" and caught.value.cause == "config"
    assert "switched off" in caught.value.what
    assert worker.status is not None and os.waitstatus_to_exitcode(worker.status) == 0  # reaped
    assert worker.peak_rss_kib is not None and worker.peak_rss_kib > 1024
    shown = worker.timeline()  # the worker's later steps came with its answer
    steps = [shown.index(f"{step} +") for step in ("pyroute2 imported", "plan received", "network failed")]
    assert steps == sorted(steps)


def test_a_run_that_stops_before_the_network_ends_the_worker(tmp_path: Path) -> None:
    worker = NetWorker.start(FakeLoader(), dhcp=False, sysfs=str(tmp_path))
    assert worker.wait_nics(30)
    started = time.monotonic()
    worker.stop()  # end of file on its pipe
    assert worker.status is not None and os.waitstatus_to_exitcode(worker.status) == 0
    assert time.monotonic() - started < 5
    worker.stop()  # twice is harmless


def _worker_that(monkeypatch: pytest.MonkeyPatch, does: Callable[[bool], None]) -> Callable[[], None]:
    """A ``before_worker`` that makes the worker (forked after it) run ``does`` instead of its imports."""
    return lambda: monkeypatch.setattr(network, "prefetch", does)


def test_a_hung_worker_is_killed_at_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hang = _worker_that(monkeypatch, lambda dhcp: time.sleep(120))
    worker = NetWorker.start(FakeLoader(), dhcp=False, sysfs=str(tmp_path), before_worker=hang)
    assert worker.wait_nics(30)
    started = time.monotonic()
    worker.stop()
    assert worker.status is not None and os.WIFSIGNALED(worker.status)
    assert os.WTERMSIG(worker.status) == signal.SIGKILL
    assert time.monotonic() - started < 5  # REAP (1 s), then SIGKILL


def test_a_hung_start_up_child_is_killed(tmp_path: Path) -> None:
    worker = NetWorker.start(FakeLoader(hang=True), dhcp=False, sysfs=str(tmp_path))
    starter = worker.starter
    started = time.monotonic()
    assert not worker.wait_nics(0.2)  # no report in time: the child is killed and reaped
    assert worker.starter == -1 and time.monotonic() - started < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(starter, os.WNOHANG)
    worker.stop()
    assert worker.status is not None and os.waitstatus_to_exitcode(worker.status) == 0


def test_a_dead_start_up_child_leaves_the_worker_working(tmp_path: Path) -> None:
    worker = NetWorker.start(FakeLoader(exit_code=3), dhcp=False, sysfs=str(tmp_path))
    assert not worker.wait_nics(30)  # end of file at once: the phases load the drivers themselves
    assert worker.nics == [] and worker.first_netlink is None
    with pytest.raises(PhaseError, match="switched off"):
        worker.bring_up(OFF, Deadline(30), lambda _line: None)


def test_a_dead_worker_is_worker_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    die = _worker_that(monkeypatch, lambda dhcp: os._exit(3))
    worker = NetWorker.start(FakeLoader(), dhcp=False, sysfs=str(tmp_path), before_worker=die)
    assert worker.wait_nics(30)
    with pytest.raises(WorkerGone, match=r"exit status 3|cannot be reached"):
        worker.bring_up(OFF, Deadline(30), lambda _line: None)
    assert worker.status is not None and os.waitstatus_to_exitcode(worker.status) == 3


def test_the_worker_inherits_what_pid1_imported_before_it(tmp_path: Path) -> None:
    """``before_worker`` runs between the forks: its imports are the worker's without a second import."""
    script = (
        "import sys\n"
        "from iscsiboot.agent.startup.netproc import NetWorker\n"
        "class Loader:\n"
        "    def load_nic_drivers(self, deadline, preloaded=False):\n"
        "        return []\n"
        "def shared():\n"
        "    import iscsiboot.agent.plan\n"
        "from iscsiboot.agent.phases import network\n"
        "def prefetch(dhcp):\n"
        "    print('WORKER', 'iscsiboot.agent.plan' in sys.modules, flush=True)\n"
        "network.prefetch = prefetch\n"
        f"worker = NetWorker.start(Loader(), dhcp=False, sysfs={str(tmp_path)!r}, before_worker=shared)\n"
        "assert worker.wait_nics(30)\n"
        "worker.stop()\n"
        "print('STATUS', worker.status, flush=True)\n"
    )
    assert "iscsiboot.agent.plan" not in subprocess.run(
        [sys.executable, "-c", "import sys, iscsiboot.agent.startup.netproc; print(sorted(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "WORKER True" in out.stdout and "STATUS 0" in out.stdout


def test_the_start_up_childs_report_is_json_without_json() -> None:
    message = {
        "nics": ["virtio_net"], "links": {"eth0": 0}, "first_netlink": 3.25, "marks": [("started", 3.0)],
        "problems": ['a "quoted" \\ line\nwith\tcontrol \x01 and ünicode'], "none": None, "yes": True,
    }  # fmt: skip
    assert json.loads(encode_plain(message)) == json.loads(encode(message))
    assert encode_plain(message).endswith(b"\n") and encode_plain(message).count(b"\n") == 1
