"""``iscsiboot doctor`` / ``discover`` and ``explain_login``: real runs against tgtd."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from doctor_support import ME, OPEN, SECRET, TARGET_SECRET, run_main
from iscsiboot.disk.install import install_image
from iscsiboot.doctor.checks import explain_login
from iscsiboot.doctor.report import CHECKS
from iscsiboot.ibft.build import build_table
from iscsiboot.ibft.mapping import model_to_table
from iscsiboot.model import BootConfig, Chap, NetMode, Network, Target
from iscsiboot.qemu.tgt import Tgtd, free_tcp_port
from iscsiboot.secret import Secret
from tgt_support import libiscsi_tool, run_tool, tgtd_missing, tool_fields

CHAPPED = "iqn.2026-11.org.iscsiboot.test:doctor-chap"
MUTUAL = "iqn.2026-11.org.iscsiboot.test:doctor-mutual"
ACL = "iqn.2026-11.org.iscsiboot.test:doctor-acl"


@dataclass
class Lab:
    tgtd: Tgtd
    image: Path
    append: str
    extlinux: Path
    work: Path

    @property
    def portal(self) -> str:
        return self.tgtd.portal

    def password_file(self, value: str) -> Path:
        path = self.work / f"pw-{abs(hash(value))}"
        path.write_text(value + "\n")
        path.chmod(0o600)
        return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = tgtd_missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("doctor")
    with Tgtd(work / "tgtd") as tgtd:
        append = (
            f"boot=ISCSI=iscsi_initiator={ME},iscsi_target_name={OPEN},iscsi_target_ip=127.0.0.1,"
            f"iscsi_target_port={tgtd.port},LABEL=System disk=LABEL=Storage quiet"
        )
        (work / "KERNEL").write_bytes(b"\x7fkernel" * 1000)
        (work / "SYSTEM").write_bytes(b"hsqs" + bytes(4096))
        image = work / "disk.img"
        install_image(image, kernel=work / "KERNEL", system=work / "SYSTEM", append=append, size_mb=48)
        extlinux = work / "extlinux.conf"
        extlinux.write_text(f"DEFAULT linux\nLABEL linux\n  KERNEL /KERNEL\n  APPEND {append}\n")
        blank = work / "blank.img"
        blank.write_bytes(bytes(2 << 20))
        tgtd.add_target(1, OPEN, [image, blank])
        tgtd.add_target(2, CHAPPED, [image])
        tgtd.add_target(3, MUTUAL, [image])
        tgtd.add_target(4, ACL, [image], initiators=["iqn.2026-11.org.iscsiboot.test:someone-else"])
        tgtd.add_target(5, OPEN + "-blank", [blank])
        tgtd.add_account("boxuser", Secret(SECRET))
        tgtd.add_account("tgtuser", Secret(TARGET_SECRET))
        tgtd.bind_account(2, "boxuser")
        tgtd.bind_account(3, "boxuser")
        tgtd.bind_account(3, "tgtuser", outgoing=True)
        yield Lab(tgtd, image, append, extlinux, work)


def test_doctor_passes_on_an_installed_image(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "doctor", "--json", "--cmdline", lab.append)
    report = json.loads(out)
    assert code == 0, json.dumps(report, indent=1) + err
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == list(CHECKS)
    luns = {lun["lun"]: lun for lun in report["luns"]}
    assert sorted(luns) == [0, 1, 2]
    disk = luns[1]
    assert disk["capacity_bytes"] == lab.image.stat().st_size and disk["block_size"] == 512
    labels = {p["label"]: p for p in disk["partitions"]}
    assert labels["System"]["bootable"] and labels["System"]["fs"] == "ext4"
    assert labels["Storage"]["fs"] == "ext4"
    assert labels["System"]["uuid"]
    # the same values as libiscsi's tools report
    url = f"iscsi://{lab.portal}/{OPEN}/1"
    inq = tool_fields(run_tool([libiscsi_tool("iscsi-inq"), "-i", ME, url]).stdout)
    assert (disk["vendor"], disk["product"], disk["revision"]) == (
        inq["Vendor"],
        inq["Product"],
        inq["Revision"],
    )
    cap = tool_fields(run_tool([libiscsi_tool("iscsi-readcapacity16"), "-i", ME, url]).stdout)
    assert disk["capacity_bytes"] == int(cap["Total size"])
    # the text form, from the extlinux.conf and from explicit options, with a UUID locator
    code, out, _ = run_main(capsys, "doctor", "--extlinux", str(lab.extlinux))
    assert code == 0 and "all checks passed" in out
    uuid = labels["System"]["uuid"]
    code, out, _ = run_main(
        capsys,
        "doctor",
        "--portal",
        lab.portal,
        "--target",
        OPEN,
        "--initiator",
        ME,
        "--system",
        f"UUID={uuid}",
    )
    assert code == 0, out
    assert re.search(r"ok +login: logged in", out)


def test_doctor_with_chap_and_mutual_chap(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    secret_file = lab.password_file(SECRET)
    target_file = lab.password_file(TARGET_SECRET)
    base = ["doctor", "--json", "--portal", lab.portal, "--initiator", ME, "--username", "boxuser"]
    code, out, _ = run_main(capsys, *base, "--target", CHAPPED, "--password-file", str(secret_file))
    report = json.loads(out)
    login = next(c for c in report["checks"] if c["name"] == "login")
    assert login["ok"] and "CHAP" in login["detail"]
    # the APPEND on System names another target, so the last check names the difference
    assert not report["checks"][-1]["ok"] and "target name" in report["checks"][-1]["detail"]
    assert code == 1
    code, out, _ = run_main(
        capsys,
        *base,
        "--target",
        MUTUAL,
        "--password-file",
        str(secret_file),
        "--reverse-username",
        "tgtuser",
        "--reverse-password-file",
        str(target_file),
    )
    login = next(c for c in json.loads(out)["checks"] if c["name"] == "login")
    assert login["ok"] and "mutual" in login["detail"]
    assert SECRET not in out and TARGET_SECRET not in out


def test_doctor_wrong_secret(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "wrong-secret-4711"
    cmdline = lab.append.replace(OPEN, CHAPPED).replace(
        "LABEL=System", f"iscsi_username=boxuser,iscsi_password={wrong},LABEL=System"
    )
    code, out, err = run_main(capsys, "doctor", "--cmdline", cmdline)
    assert code == 1
    assert re.search(
        r"FAILED login: the target answered: authentication failure with CHAP user 'boxuser'", out
    )
    assert wrong not in out + err
    code, out, err = run_main(capsys, "doctor", "--json", "--cmdline", cmdline)
    assert wrong not in out + err


def test_doctor_wrong_target_and_blank_disk(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "doctor", "--json", "--cmdline", lab.append.replace(OPEN, OPEN + "-typo"))
    report = json.loads(out)
    assert code == 1
    by_name = {c["name"]: c for c in report["checks"]}
    assert not by_name["discovery"]["ok"] and OPEN in by_name["discovery"]["detail"]
    assert not by_name["login"]["ok"] and "no target named" in by_name["login"]["detail"]
    code, out, _ = run_main(
        capsys, "doctor", "--json", "--cmdline", lab.append.replace(OPEN, OPEN + "-blank")
    )
    by_name = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 1 and by_name["luns"]["ok"] and by_name["capacity"]["ok"]
    assert not by_name["partition table"]["ok"] and by_name["partition table"]["fix"]


def test_doctor_missing_lun_and_wrong_label(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["doctor", "--json", "--portal", lab.portal, "--target", OPEN, "--initiator", ME]
    code, out, _ = run_main(capsys, *base, "--lun", "7")
    by_name = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 1 and "LUN 7 does not exist" in by_name["luns"]["detail"]
    code, out, _ = run_main(capsys, *base, "--system", "LABEL=Nope")
    by_name = {c["name"]: c for c in json.loads(out)["checks"]}
    assert (
        code == 1 and not by_name["file systems"]["ok"] and "LABEL=Nope" in by_name["file systems"]["detail"]
    )


def test_explain_login_acl(lab: Lab) -> None:
    host, port = "127.0.0.1", lab.tgtd.port
    text = explain_login(Target(ACL, host, port), ME, timeout=5)
    assert ME in text and "ACL" in text and "\n" not in text
    ok = explain_login(Target(OPEN, host, port), ME, timeout=5)
    assert "works now" in ok
    chap = Target(CHAPPED, host, port, chap=Chap("boxuser", Secret("bad-secret-9876")))
    text = explain_login(chap, ME, timeout=5)
    assert "authentication failure" in text and "bad-secret-9876" not in text
    closed = explain_login(Target(OPEN, host, free_tcp_port()), ME, timeout=2)
    assert "refused" in closed


def test_discover_command(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "discover", "--portal", lab.portal, "--initiator", ME)
    assert code == 0
    assert f"127.0.0.1:{lab.tgtd.port},1 {OPEN}\n" in out
    assert ACL not in out
    code, out, _ = run_main(capsys, "discover", "--json", "--portal", lab.portal)
    names = [t["name"] for t in json.loads(out)["targets"]]
    assert OPEN in names and CHAPPED in names
    # like iscsiadm's discovery, as libiscsi's iscsi-ls sees the same names
    listing = run_tool([libiscsi_tool("iscsi-ls"), "-i", ME, f"iscsi://{lab.portal}"]).stdout
    assert set(re.findall(r"Target:(\S+)", listing)) == {n for n in names}


def test_doctor_from_an_ibft(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    config = BootConfig(
        initiator=ME,
        targets=(Target(OPEN, "127.0.0.1", lab.tgtd.port, lun=1),),
        network=Network(mode=NetMode.STATIC, address="127.0.0.2", prefix=8),
    )
    table = lab.work / "ibft.bin"
    table.write_bytes(build_table(model_to_table(config)))
    code, out, err = run_main(capsys, "doctor", "--json", "--ibft", str(table))
    report = json.loads(out)
    assert code == 0, json.dumps(report, indent=1) + err
    assert report["initiator"] == ME and report["target"] == OPEN
