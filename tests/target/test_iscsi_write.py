"""Writes through the initiator against a real tgtd: data read back through iSCSI and from
the backing file, under the target's write-path keys changed with tgtadm, a 4096-byte
block LUN, SYNCHRONIZE CACHE, UNMAP on a thin LUN, and session reinstatement.

tgtd lets ``tgtadm --mode target --op update`` change every key these tests use
(ImmediateData, InitialR2T, MaxRecvDataSegmentLength, FirstBurstLength,
MaxBurstLength, MaxOutstandingR2T, and MaxXmitDataSegmentLength, its cap on the
Data-In segments it sends); a new login negotiates them.  ``--blocksize 4096``
makes a 4096-byte block LUN; ``--params thin_provisioning=1`` a thin one that
takes UNMAP (holes punched in the backing file).
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from iscsiboot.iscsi import scsi
from iscsiboot.iscsi.session import Session
from iscsiboot.iscsi.transport import TransportError
from iscsiboot.proc import run
from iscsiboot.qemu.tgt import Tgtd
from tgt_support import MIB, libiscsi_tool, run_tool, tgtd_missing, tool_fields

ME = "iqn.2026-11.org.iscsiboot.test:writer"
IMAGE_MIB = 8


def _iqn(name: str) -> str:
    return f"iqn.2026-11.org.iscsiboot.test:{name}"


# name -> the target keys set with tgtadm before any login (tgtd's defaults otherwise:
# InitialR2T=Yes, ImmediateData=Yes, MaxRecvDataSegmentLength=8192, FirstBurstLength=65536,
# MaxBurstLength=262144, MaxOutstandingR2T=1)
VARIANTS: dict[str, dict[str, str]] = {
    "defaults": {},
    "unsolicited": {"InitialR2T": "No", "MaxRecvDataSegmentLength": "262144", "FirstBurstLength": "262144"},
    "no-immediate": {"ImmediateData": "No"},
    "no-immediate-unsolicited": {"ImmediateData": "No", "InitialR2T": "No"},
    "small": {
        "InitialR2T": "No",
        "MaxRecvDataSegmentLength": "512",
        "FirstBurstLength": "2048",
        "MaxBurstLength": "16384",
        "MaxOutstandingR2T": "4",
        "MaxXmitDataSegmentLength": "1024",
    },
    "digests": {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C", "InitialR2T": "No"},
}


@dataclass
class Lab:
    tgtd: Tgtd
    work: Path
    tids: dict[str, int]

    def image(self, name: str, lun: int = 1) -> Path:
        return self.work / f"{name}-{lun}.img"

    def login(self, name: str, **kw: object) -> Session:
        return Session.login("127.0.0.1", self.tgtd.port, initiator=ME, target=_iqn(name), timeout=20,
                             digests=name == "digests", **kw)  # type: ignore[arg-type]  # fmt: skip

    def tgtadm(self, *args: str) -> None:
        run(["tgtadm", "-C", str(self.tgtd.control_port), "--lld", "iscsi", *args], what="configure tgtd")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = tgtd_missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("writes")
    with Tgtd(work / "tgtd") as tgtd:
        lab = Lab(tgtd, work, {})
        names = [*VARIANTS, "blocks4k", "thin", "reinstate"]
        for tid, name in enumerate(names, start=1):
            image = lab.image(name)
            with open(image, "wb") as handle:
                handle.truncate(IMAGE_MIB * MIB)
            lab.tids[name] = tid
            if name == "blocks4k":
                lab.tgtadm("--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", _iqn(name))
                lab.tgtadm("--mode", "logicalunit", "--op", "new", "--tid", str(tid), "--lun", "1",
                           "--backing-store", str(image), "--blocksize", "4096")  # fmt: skip
                lab.tgtadm(
                    "--mode", "target", "--op", "bind", "--tid", str(tid), "--initiator-address", "ALL"
                )
            else:
                tgtd.add_target(tid, _iqn(name), [image])
            if name == "thin":
                lab.tgtadm("--mode", "logicalunit", "--op", "update", "--tid", str(tid), "--lun", "1",
                           "--params", "thin_provisioning=1")  # fmt: skip
            for key, value in VARIANTS.get(name, {}).items():
                tgtd.set_param(tid, key, value)
        yield lab


def _pattern(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# (LBA, blocks of 512 bytes): one block, odd sizes, bursts and several commands of 1 MiB
EXTENTS = [(0, 1), (3, 7), (100, 129), (1000, 2048 + 1), (4097, 5 * 2048 + 3)]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_write_and_read_back(lab: Lab, name: str) -> None:
    image = lab.image(name)
    with lab.login(name) as session:
        p = session.params
        wanted = VARIANTS[name]
        if "InitialR2T" in wanted:
            assert p.initial_r2t is (wanted["InitialR2T"] == "Yes")
        assert p.immediate_data is (wanted.get("ImmediateData", "Yes") == "Yes")
        assert p.max_xmit_data_segment_length == int(wanted.get("MaxRecvDataSegmentLength", "8192"))
        assert p.first_burst_length == int(wanted.get("FirstBurstLength", "65536"))
        assert p.max_burst_length == int(wanted.get("MaxBurstLength", "262144"))
        assert p.max_outstanding_r2t == int(wanted.get("MaxOutstandingR2T", "1"))
        assert p.header_digest is p.data_digest is (name == "digests")
        extents = EXTENTS[:4] if name == "digests" else EXTENTS  # the pure-Python CRC32C is slow
        for seed, (lba, blocks) in enumerate(extents):
            data = _pattern(seed, blocks * 512)
            session.write(1, lba, data, block_size=512)
            assert session.read(1, lba, blocks) == data, (lba, blocks)
        session.synchronize_cache(1)
        on_disk = image.read_bytes()
        for seed, (lba, blocks) in enumerate(extents):
            assert on_disk[lba * 512 : (lba + blocks) * 512] == _pattern(seed, blocks * 512)
        # writes that overlap earlier ones, read back in one piece
        session.write(1, 5, memoryview(bytearray(b"\xa5" * 1024)), block_size=512)
        assert (
            session.read(1, 3, 7)
            == _pattern(1, 7 * 512)[:1024] + b"\xa5" * 1024 + _pattern(1, 7 * 512)[2048:]
        )


def test_block_size_4096(lab: Lab) -> None:
    with lab.login("blocks4k") as session:
        cap = session.read_capacity(1)
        assert (cap.block_size, cap.blocks) == (4096, IMAGE_MIB * MIB // 4096)
        data = os.urandom(300 * 4096)
        session.write(1, 7, data, block_size=4096)
        assert session.read(1, 7, 300, block_size=4096) == data
        last = os.urandom(4096)
        session.write(1, cap.last_lba, last, block_size=4096)
        assert session.read(1, cap.last_lba, 1, block_size=4096) == last
        session.synchronize_cache(1)
    on_disk = lab.image("blocks4k").read_bytes()
    assert on_disk[7 * 4096 : 307 * 4096] == data and on_disk[-4096:] == last


def test_unmap_on_a_thin_lun(lab: Lab) -> None:
    image = lab.image("thin")
    with lab.login("thin") as session:
        limits = session.block_limits(1)
        assert limits.unmap and limits.zeroes_unmapped
        assert limits.max_unmap_blocks == scsi.NO_LIMIT
        data = os.urandom(4 * MIB)
        session.write(1, 0, data, block_size=512)
        session.synchronize_cache(1)
        allocated = image.stat().st_blocks
        session.unmap(1, 2048, 4096)  # the second and third MiB
        assert session.read(1, 0, 8192) == data[:MIB] + bytes(2 * MIB) + data[3 * MIB :]
        assert image.stat().st_blocks <= allocated - 2 * MIB // 512  # holes punched in the file
        session.unmap(1, 1, 1)
        assert session.read(1, 0, 3) == data[:512] + bytes(512) + data[1024:1536]
    with lab.login("blocks4k") as session:
        assert not session.block_limits(1).unmap  # a fully provisioned LUN


def test_limits_match_libiscsi(lab: Lab) -> None:
    inq, cap16 = libiscsi_tool("iscsi-inq"), libiscsi_tool("iscsi-readcapacity16")
    url = f"iscsi://{lab.tgtd.portal}/{_iqn('thin')}/1"
    b0 = tool_fields(run_tool([inq, "-i", ME, "-e", "1", "-c", str(0xB0), url]).stdout)
    b2 = tool_fields(run_tool([inq, "-i", ME, "-e", "1", "-c", str(0xB2), url]).stdout)
    cap = tool_fields(run_tool([cap16, "-i", ME, url]).stdout)
    with lab.login("thin") as session:
        page = scsi.parse_block_limits_page(session.command(1, scsi.inquiry_cdb(page=0xB0, length=64), 64))
        provisioning = scsi.parse_provisioning_page(
            session.command(1, scsi.inquiry_cdb(page=0xB2, length=64), 64)
        )
        mine = session.read_capacity(1)
    assert page.max_unmap_blocks == int(b0["maximum unmap lba count"])
    assert page.max_unmap_descriptors == int(b0["maximum unmap block descriptor count"])
    assert page.max_transfer_blocks == int(b0["maximum transfer length"])
    assert page.optimal_transfer_blocks == int(b0["optimal transfer length"])
    assert provisioning.unmap is (b2["lbpu"] == "1")
    assert provisioning.provisioning_type == int(b2["provisioning type"])
    assert mine.provisioned is ("LBPME:1" in run_tool([cap16, "-i", ME, url]).stdout)
    assert mine.bytes == int(cap["Total size"])


def test_reinstatement_with_the_same_isid(lab: Lab) -> None:
    old = lab.login("reinstate")
    try:
        first = os.urandom(64 * 1024)
        old.write(1, 0, first, block_size=512)
        # the old connection stays open and silent (as after a network cut); a new
        # login with its ISID takes its place
        new = lab.login("reinstate", isid=old.isid)
        try:
            assert new.isid == old.isid and new.result.tsih != old.result.tsih
            assert new.read(1, 0, 128) == first  # a UNIT ATTENTION, if any, is retried
            second = os.urandom(MIB + 512)
            new.write(1, 100, second, block_size=512)
            assert new.read(1, 100, len(second) // 512) == second
            with pytest.raises(TransportError):  # the target ended the old session
                old.read(1, 0, 1)
        finally:
            new.logout()
        # a lost connection: the socket shut down under a session; log in again and replay
        again = lab.login("reinstate")
        again.transport.sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(TransportError):
            again.write(1, 0, bytes(4096), block_size=512)
        replay = lab.login("reinstate", isid=again.isid)
        with replay:
            replay.write(1, 0, bytes(4096), block_size=512)
            assert replay.read(1, 0, 8) == bytes(4096)
            assert replay.read(1, 100, 1) == second[:512]
    finally:
        old.close()
