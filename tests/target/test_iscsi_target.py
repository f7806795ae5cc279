"""The initiator against a real tgtd on loopback, cross-checked with libiscsi's tools."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi import scsi
from iscsiboot.iscsi.login import AuthenticationFailed, LoginFailed
from iscsiboot.iscsi.session import Session
from iscsiboot.iscsi.transport import PortalUnreachable
from iscsiboot.model import Chap
from iscsiboot.qemu.tgt import Tgtd, free_tcp_port
from iscsiboot.secret import Secret
from tgt_support import Fs, libiscsi_tool, make_disk_image, run_tool, tgtd_missing, tool_fields

OPEN = "iqn.2026-11.org.iscsiboot.test:open"
ONEWAY = "iqn.2026-11.org.iscsiboot.test:oneway"
MUTUAL = "iqn.2026-11.org.iscsiboot.test:mutual"
ACL = "iqn.2026-11.org.iscsiboot.test:acl"
ME = "iqn.2026-11.org.iscsiboot.test:initiator"
ALLOWED = "iqn.2026-11.org.iscsiboot.test:allowed"
USER, PASSWORD = Chap("alice", Secret("alice-secret-01")), "alice-secret-01"
TARGET_USER = Chap("tgtuser", Secret("target-secret-02"))


class Lab:
    def __init__(self, tgtd: Tgtd, images: list[Path]) -> None:
        self.tgtd = tgtd
        self.images = images
        self.host = "127.0.0.1"
        self.port = tgtd.port

    def login(self, target: str, **kw: object) -> Session:
        return Session.login(self.host, self.port, initiator=ME, target=target, timeout=10, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = tgtd_missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("lab")
    first = make_disk_image(
        work / "a.img",
        [Fs(8, "System", files={"KERNEL": b"k" * 5000}, bootable=True), Fs(6, "Storage")],
    )
    second = work / "b.img"
    second.write_bytes(bytes(range(256)) * (3 * 4096))  # 3 MiB, a pattern to read back
    with Tgtd(work / "tgtd") as tgtd:
        tgtd.add_target(1, OPEN, [first, second])
        tgtd.add_target(2, ONEWAY, [first])
        tgtd.add_target(3, MUTUAL, [first])
        tgtd.add_target(4, ACL, [first], initiators=[ALLOWED])
        tgtd.add_account(USER.username, USER.password)
        tgtd.add_account(TARGET_USER.username, TARGET_USER.password)
        tgtd.bind_account(2, USER.username)
        tgtd.bind_account(3, USER.username)
        tgtd.bind_account(3, TARGET_USER.username, outgoing=True)
        yield Lab(tgtd, [first, second])


def test_discovery_lists_every_target(lab: Lab) -> None:
    with Session.login(lab.host, lab.port, initiator=ME, timeout=10) as session:
        found = {t.name: t.addresses for t in session.send_targets()}
    assert {OPEN, ONEWAY, MUTUAL} <= set(found)
    assert ACL not in found  # tgt hides targets whose ACL refuses the initiator
    assert found[OPEN] == (f"127.0.0.1:{lab.port},1",)


def test_several_luns_and_data(lab: Lab) -> None:
    with lab.login(OPEN) as session:
        assert session.report_luns() == (0, 1, 2)
        assert session.inquiry(0).type_name == "controller"
        cap = session.read_capacity(2)
        assert cap.bytes == lab.images[1].stat().st_size
        assert session.read_capacity10(2) == cap
        data = session.read(2, 0, cap.blocks)  # several 256 KiB READ(10)s
        assert data == lab.images[1].read_bytes()
        assert session.read(1, 0, 1) == lab.images[0].read_bytes()[:512]
        assert session.command(2, scsi.read16_cdb(5, 2), 1024) == lab.images[1].read_bytes()[2560:3584]
        ids = session.device_identification(1)
        assert any("IET" in d.text for d in ids)


def test_matches_libiscsi(lab: Lab, tmp_path: Path) -> None:
    inq_tool, cap_tool, ls_tool = (
        libiscsi_tool(n) for n in ("iscsi-inq", "iscsi-readcapacity16", "iscsi-ls")
    )
    # iscsi-ls stops at the first target it cannot log in to: give it a tgtd of its own
    with Tgtd(tmp_path / "tgtd") as tgtd:
        tgtd.add_target(1, OPEN, lab.images)
        with Session.login("127.0.0.1", tgtd.port, initiator=ME, target=OPEN, timeout=10) as session:
            for lun in (1, 2):
                url = f"iscsi://{tgtd.portal}/{OPEN}/{lun}"
                theirs = tool_fields(run_tool([inq_tool, "-i", ME, url]).stdout)
                ours = session.inquiry(lun)
                assert (ours.vendor, ours.product, ours.revision) == (
                    theirs["Vendor"],
                    theirs["Product"],
                    theirs["Revision"],
                )
                cap = tool_fields(run_tool([cap_tool, "-i", ME, url]).stdout)
                mine = session.read_capacity(lun)
                assert mine.bytes == int(cap["Total size"])
                assert mine.block_size == int(cap["LOGICAL BLOCK LENGTH IN BYTES"])
            listing = run_tool([ls_tool, "-i", ME, "-s", f"iscsi://{tgtd.portal}"]).stdout
            assert f"Target:{OPEN} " in listing, listing
            assert tuple(int(n) for n in re.findall(r"Lun:(\d+)", listing)) == session.report_luns()


def test_one_way_chap(lab: Lab) -> None:
    with lab.login(ONEWAY, chap=USER) as session:
        assert session.result.auth == "CHAP"
        assert session.report_luns() == (0, 1)


def test_mutual_chap(lab: Lab) -> None:
    with lab.login(MUTUAL, chap=USER, reverse_chap=TARGET_USER) as session:
        assert session.result.auth == "CHAP (mutual)"


def test_mutual_chap_catches_a_target_without_the_reverse_secret(lab: Lab) -> None:
    with pytest.raises(AuthenticationFailed, match="reverse secret"):
        lab.login(MUTUAL, chap=USER, reverse_chap=Chap("tgtuser", Secret("not-the-secret-9")))


def test_wrong_secret(lab: Lab) -> None:
    with pytest.raises(LoginFailed) as failed:
        lab.login(ONEWAY, chap=Chap("alice", Secret("wrong-secret-123")))
    assert (failed.value.status_class, failed.value.status_detail) == (2, 1)
    assert "wrong-secret-123" not in str(failed.value)


def test_chap_missing(lab: Lab) -> None:
    with pytest.raises(LoginFailed) as failed:
        lab.login(ONEWAY)
    assert failed.value.status_class == 2


def test_wrong_target_name(lab: Lab) -> None:
    with pytest.raises(LoginFailed) as failed:
        lab.login(OPEN + "-typo")
    assert failed.value.status_name == "target not found"


def test_acl_refusal_and_admission(lab: Lab) -> None:
    with pytest.raises(LoginFailed) as failed:
        lab.login(ACL)
    # tgt answers "target not found" (0x0203) to an initiator its ACL refuses; others say 0x0202
    assert (failed.value.status_class, failed.value.status_detail) in ((2, 2), (2, 3))
    with Session.login(lab.host, lab.port, initiator=ALLOWED, target=ACL, timeout=10) as session:
        assert session.report_luns() == (0, 1)


def test_two_sessions_of_one_initiator_coexist(lab: Lab) -> None:
    """Random ISIDs: a second login of the same initiator does not reinstate the first."""
    with lab.login(OPEN) as first, lab.login(OPEN) as second:
        assert second.read(1, 0, 1) == first.read(1, 0, 1)


def test_offline_target(lab: Lab) -> None:
    lab.tgtd.set_state(1, "offline")
    try:
        with pytest.raises(LoginFailed) as failed:
            lab.login(OPEN)
        assert failed.value.status_class == 3
    finally:
        lab.tgtd.set_state(1, "ready")
    with lab.login(OPEN) as session:
        assert session.report_luns()


def test_closed_port() -> None:
    with pytest.raises(PortalUnreachable, match="refused"):
        Session.login("127.0.0.1", free_tcp_port(), initiator=ME, target=OPEN, timeout=3)


def test_redirect_is_followed_once_per_hop(lab: Lab, tmp_path: Path) -> None:
    with Tgtd(tmp_path / "b", host="127.0.0.2") as moved:
        moved.add_target(1, OPEN, lab.images[:1])
        with Tgtd(tmp_path / "a", host="127.0.0.3") as old:
            old.add_target(1, OPEN, lab.images[:1])
            old.set_redirect(1, "127.0.0.2", moved.port)
            with Session.login("127.0.0.3", old.port, initiator=ME, target=OPEN, timeout=10) as session:
                assert session.redirects == (f"127.0.0.2:{moved.port}",)
                assert session.portal == f"127.0.0.2:{moved.port}"
                assert session.report_luns() == (0, 1)
            moved.set_redirect(1, "127.0.0.3", old.port, permanent=True)  # a loop
            with pytest.raises(IscsibootError, match="more than 3 redirects"):
                Session.login("127.0.0.3", old.port, initiator=ME, target=OPEN, timeout=10)


def test_crc32c_digests_and_nop_pings(lab: Lab, tmp_path: Path) -> None:
    with Tgtd(tmp_path / "d") as tgtd:
        tgtd.add_target(1, OPEN, lab.images[1:])
        for name in ("HeaderDigest", "DataDigest"):
            tgtd.set_param(1, name, "CRC32C")
        tgtd.set_param(1, "nop_interval", "1")
        tgtd.set_param(1, "nop_count", "3")  # with the default 0 tgt drops the connection at once
        with Session.login(
            "127.0.0.1", tgtd.port, initiator=ME, target=OPEN, timeout=10, digests=True
        ) as session:
            assert session.params.header_digest and session.params.data_digest
            assert session.read(1, 0, 2048) == lab.images[1].read_bytes()[: 2048 * 512]
            assert session.idle(10, until_pings=2) == 2  # the target pinged twice and we answered
            assert session.read(1, 4, 1) == lab.images[1].read_bytes()[2048:2560]
