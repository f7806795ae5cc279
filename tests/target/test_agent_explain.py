"""After a failed login the agent asks the real target why, with the doctor's checks."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.options import parse_options
from iscsiboot.agent.plan import NetResult
from iscsiboot.agent.report import Reporter
from iscsiboot.agent.results import ConfigResult, ModulesResult, NetworkResult
from iscsiboot.agent.runner import Agent
from iscsiboot.model import BootConfig, Chap, Target
from iscsiboot.secret import Secret
from tgt_support import tgtd_or_skip

IQN = "iqn.2024-01.test.explain:disk"


INITIATOR = "iqn.2024-01.test.explain:htpc"


RIGHT = Secret("right-secret-1234")


WRONG = Secret("wrong-secret-5678")


def test_failed_login_is_explained_by_the_target(tmp_path: Path) -> None:
    if shutil.which("iscsistart") is None:
        pytest.skip("iscsistart not installed (Debian package open-iscsi)")
    lun = tmp_path / "lun.img"
    lun.write_bytes(b"\0" * (4 << 20))
    with tgtd_or_skip(tmp_path) as tgtd:
        tgtd.add_target(1, IQN, [lun])
        tgtd.add_account("htpc", RIGHT)
        tgtd.bind_account(1, "htpc")
        target = Target(IQN, "127.0.0.1", port=tgtd.port, chap=Chap("htpc", WRONG))
        out = io.StringIO()
        reporter = Reporter(out, kmsg=None, report_path=None)
        reporter.add_secrets([WRONG])
        agent = Agent("", parse_options(""), reporter)
        config = ConfigResult(BootConfig(initiator=INITIATOR, targets=(target,)))
        # iscsistart cannot log in on this host (no iscsi_tcp): its own error is the
        # phase's cause; the target's answer to a test login is the diagnosis.
        with pytest.raises(PhaseError) as info:
            agent.login(
                config, ModulesResult(), NetworkResult(NetResult("lo", None, None, "static")), Deadline(3)
            )
    error = info.value
    assert error.phase == "login"
    assert error.evidence is not None and "authentication failure" in error.evidence
    everything = " ".join([str(error), error.paragraph(), out.getvalue()])
    assert WRONG.reveal() not in everything and RIGHT.reveal() not in everything
    assert "asking the target why" in out.getvalue()
