"""Boots from the targets NAS boxes run: LIO (in a target VM) and istgt, beside tgt.

For each: iPXE sanboot with the iBFT and mutual CHAP, the explicit command
line with one-way CHAP, a wrong password that ends in the named cause, and
the NBD transport (mutual CHAP, the command line).
The LIO target VM starts once for this module and serves every LIO scenario
(it is re-configured through configfs between them); its disk is built once.
tgt's own runs of the same three are in test_vm.py.  The doctor against the
LIO VM reports what libiscsi's tools report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from iscsiboot.cli import main
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts, build_disk, run_scenario
from iscsiboot.qemu.lio import LioVm
from iscsiboot.qemu.outcome import Outcome
from iscsiboot.qemu.scenario import Mode, ScenarioOptions, plan
from iscsiboot.qemu.targets import TargetKind
from iscsiboot.secret import Secret
from targets_support import assert_doctor_matches_libiscsi, doctor_json, password_file
from vm_support import (
    BOOT_TIMEOUT,
    PASSWORD,
    REVERSE_PASSWORD,
    REVERSE_USER,
    SECRETS,
    TIMINGS,
    USER,
    WRONG_PASSWORD,
    expect_failure,
    expect_success,
    explain,
    require_vm,
)


@pytest.fixture(scope="module", autouse=True)
def _report_timings(request: pytest.FixtureRequest) -> Iterator[None]:
    """The boot times of this module's scenarios and the LIO VM's start, after the module."""
    first = len(TIMINGS)
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or len(TIMINGS) == first:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("target scenario times (QEMU start to result; the LIO VM to its ready line):")
        for name, seconds in TIMINGS[first:]:
            reporter.write_line(f"  {name:<28} {seconds:6.1f} s")


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    require_vm()
    return prepare()


@pytest.fixture(scope="module")
def lio(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LioVm]:
    """The LIO target VM of this module, serving a disk built once."""
    work = tmp_path_factory.mktemp("lio")
    disk = work / "disk.img"
    options = ScenarioOptions(target=TargetKind.LIO, disk=disk)
    build_disk(
        plan(options, port=3260, workdir=work, kernel=artifacts.kernel, initrd=artifacts.initrd), artifacts
    )
    vm = LioVm(work / "vm", image=disk)
    try:
        vm.start()
        TIMINGS.append(("LIO target VM start", vm.start_seconds))
        yield vm
    finally:
        vm.stop()


def one_way(target: TargetKind, **kw: object) -> ScenarioOptions:
    return ScenarioOptions(
        target=target,
        username=USER,
        password=Secret(PASSWORD),
        timeout=BOOT_TIMEOUT,
        **kw,  # type: ignore[arg-type]
    )


def mutual(target: TargetKind, **kw: object) -> ScenarioOptions:
    return one_way(target, reverse_username=REVERSE_USER, reverse_password=Secret(REVERSE_PASSWORD), **kw)


def boot(
    name: str, options: ScenarioOptions, artifacts: Artifacts, log_dir: Path, lio: LioVm | None
) -> Outcome:
    if lio is not None:
        options = replace(options, disk=lio.image)
    outcome = run_scenario(options, artifacts, log_dir=log_dir, target=lio)
    TIMINGS.append((name, outcome.boot_seconds))
    return outcome


def no_secret_in(outcome: Outcome, why: str) -> None:
    text = outcome.console + json.dumps(outcome.to_json())
    if outcome.log_path is not None:
        text += outcome.log_path.read_text()
    for secret in SECRETS:
        assert secret not in text, f"a CHAP secret leaked\n{why}"


def _server(kind: TargetKind, request: pytest.FixtureRequest) -> LioVm | None:
    if kind is TargetKind.LIO:
        vm: LioVm = request.getfixturevalue("lio")
        return vm
    return None


KINDS = [TargetKind.LIO, TargetKind.ISTGT]


@pytest.mark.parametrize("kind", KINDS, ids=[k.value for k in KINDS])
def test_ipxe_sanboot_ibft_mutual_chap(
    kind: TargetKind, artifacts: Artifacts, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    name = f"{kind.value} ibft mutual"
    outcome = boot(name, mutual(kind), artifacts, tmp_path, _server(kind, request))
    expect_success(outcome, name)
    why = explain(outcome, name)
    assert "the target serves the disk at LUN 0 (REPORT LUNS, INQUIRY)" in outcome.progress, why
    assert "boot=ISCSI=auto,LABEL=System" in outcome.console, why  # extlinux on the LUN booted the kernel
    no_secret_in(outcome, why)


@pytest.mark.parametrize("kind", KINDS, ids=[k.value for k in KINDS])
def test_cmdline_explicit_options_one_way_chap(
    kind: TargetKind, artifacts: Artifacts, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    name = f"{kind.value} cmdline one-way"
    outcome = boot(name, one_way(kind, mode=Mode.CMDLINE), artifacts, tmp_path, _server(kind, request))
    expect_success(outcome, name)
    why = explain(outcome, name)
    assert "boot=ISCSI=iscsi_initiator=" in outcome.console, why
    no_secret_in(outcome, why)


@pytest.mark.parametrize("kind", KINDS, ids=[k.value for k in KINDS])
def test_wrong_password_names_the_cause(
    kind: TargetKind, artifacts: Artifacts, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    name = f"{kind.value} wrong password"
    options = one_way(kind, mode=Mode.CMDLINE, client_password=Secret(WRONG_PASSWORD))
    outcome = boot(name, options, artifacts, tmp_path, _server(kind, request))
    expect_failure(outcome, name, "login")
    why = explain(outcome, name)
    assert outcome.result is not None
    assert "authentication" in str(outcome.result.error or "").lower(), why
    assert outcome.result.cause in (None, "auth"), why
    assert not outcome.result.mounts, why
    no_secret_in(outcome, why)


@pytest.fixture(scope="module")
def nbd_artifacts() -> Artifacts:
    require_vm()
    return prepare(transport="nbd")


@pytest.mark.parametrize("kind", KINDS, ids=[k.value for k in KINDS])
def test_nbd_transport_cmdline_mutual_chap(
    kind: TargetKind, nbd_artifacts: Artifacts, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The NBD transport (an image without kernel iSCSI) logs in with mutual CHAP and boots."""
    name = f"{kind.value} nbd cmdline mutual"
    options = mutual(kind, mode=Mode.CMDLINE, extra_append=("iscsiboot.transport=nbd",))
    outcome = boot(name, options, nbd_artifacts, tmp_path, _server(kind, request))
    expect_success(outcome, name)
    why = explain(outcome, name)
    assert outcome.result is not None and outcome.result.transport == "nbd", why
    no_secret_in(outcome, why)


def test_doctor_on_lio_matches_libiscsi(
    lio: LioVm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The doctor names LIO from INQUIRY; capacity, vendor and product are libiscsi's.

    libiscsi 1.19's mutual CHAP is refused by LIO ("iSCSI Login negotiation
    failed"), so the comparison logs in with one-way CHAP.
    """
    initiator = ScenarioOptions().initiator
    iqn = ScenarioOptions().target_name
    spec_options = one_way(TargetKind.LIO, disk=lio.image)
    spec = plan(spec_options, port=lio.port, workdir=tmp_path).target
    lio.serve(spec, initiator=initiator)
    pw = password_file(tmp_path, "pw", PASSWORD)
    base = ("--portal", f"127.0.0.1:{lio.port}", "--target", iqn, "--initiator", initiator)
    code, report = doctor_json(capsys, *base, "--username", USER, "--password-file", str(pw))
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
    assert checks["login"]["ok"] and checks["luns"]["ok"], report
    assert "(LIO)" in checks["capacity"]["detail"], report
    assert checks["bootable partition"]["ok"] and checks["file systems"]["ok"], report
    url = f"iscsi://{USER}%{PASSWORD}@127.0.0.1:{lio.port}/{iqn}/0"
    assert_doctor_matches_libiscsi(report, url, initiator, 0)
    assert code in (0, 1)
    # tgt's LUN 1 does not exist here: the fix names LIO's layout and the disk LUN
    code, report = doctor_json(capsys, *base, "--lun", "1", "--username", USER, "--password-file", str(pw))
    luns = next(c for c in report["checks"] if c["name"] == "luns")  # type: ignore[attr-defined]
    assert code == 1 and "the disk here is LUN 0" in luns["fix"] and "LIO" in luns["fix"], luns
    # discovery lists LIO at its own address inside the VM: discover says which portal answered
    code = main(["discover", "--portal", f"127.0.0.1:{lio.port}", "--initiator", initiator])
    out, err = capsys.readouterr()
    assert code == 0 and f"10.0.2.15:3260,1 {iqn}" in out, out + err
    assert f"not at 127.0.0.1:{lio.port}" in err, err
    # an initiator outside the ACL: LIO answers "not authorized" (tgt: "not found")
    code, report = doctor_json(
        capsys,
        *base[:-1],
        "iqn.2026-11.org.iscsiboot:stranger",
        "--username",
        USER,
        "--password-file",
        str(pw),
    )
    login = next(c for c in report["checks"] if c["name"] == "login")  # type: ignore[attr-defined]
    assert code == 1 and not login["ok"], login
    assert "authorization failure" in login["detail"] and "ACL" in login["detail"], login
