"""The iSCSI protocol core from bytes: PDUs, digests, serial numbers, text keys, CHAP, login, SCSI."""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi import chap, scsi
from iscsiboot.iscsi.login import (
    AuthenticationFailed,
    Login,
    LoginFailed,
    LoginRedirect,
    LoginSettings,
    parse_target_address,
    random_isid,
)
from iscsiboot.iscsi.pdu import (
    Op,
    Pdu,
    PduReader,
    ProtocolError,
    crc32c,
    decode,
    digest_bytes,
    encode,
    make_bhs,
    sn_add,
    sn_gt,
    sn_le,
    sn_lt,
)
from iscsiboot.iscsi.status import STATUS, Code, StatusCause, status_of
from iscsiboot.iscsi.text import Params, decode_binary, decode_keys, encode_keys, negotiate, operational_offer
from iscsiboot.model import Chap
from iscsiboot.secret import Secret

ISID = bytes.fromhex("80123456789a")
INITIATOR = "iqn.2026-11.org.iscsiboot:client"
TARGET = "iqn.2026-11.org.iscsiboot:disk"

# ------------------------------------------------------------------ digests, serial numbers


def test_crc32c_vectors() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert digest_bytes(bytes(32)) == bytes.fromhex("aa36918a")


def test_serial_arithmetic() -> None:
    assert sn_lt(1, 2) and not sn_lt(2, 1) and not sn_lt(5, 5)
    assert sn_lt(0xFFFFFFFF, 0) and sn_gt(0, 0xFFFFFFFF)
    assert sn_add(0xFFFFFFFF, 1) == 0
    assert sn_le(7, 7)
    assert not sn_lt(0, 1 << 31) and not sn_gt(0, 1 << 31)  # undefined distance


# ------------------------------------------------------------------ PDUs


def _login_request() -> Pdu:
    bhs = make_bhs(Op.LOGIN_REQUEST, immediate=True, flags=0x87)
    bhs[8:14] = ISID
    struct.pack_into(">I", bhs, 16, 0x10)
    struct.pack_into(">I", bhs, 24, 1)
    return Pdu(bytes(bhs), b"", encode_keys([("InitiatorName", "iqn.x:y"), ("SessionType", "Discovery")]))


def test_golden_login_request() -> None:
    raw = encode(_login_request())
    expected = (
        bytes.fromhex(
            "43870000"  # I + Login, T CSG1 NSG3, versions
            "0000002c"  # no AHS, 44 data bytes (a multiple of 4: no padding)
            "80123456789a0000"  # ISID, TSIH 0
            "00000010"  # ITT
            "00000000"  # CID, reserved
            "00000001"  # CmdSN
            "00000000" + "00" * 16  # ExpStatSN
        )
        + b"InitiatorName=iqn.x:y\0SessionType=Discovery\0"
    )
    assert raw == expected
    assert len(raw) % 4 == 0
    back = decode(raw.replace(b"\x43", b"\x23", 1))  # the same bytes as a target opcode
    assert back.data == _login_request().data


def test_digests_round_trip_and_mismatch() -> None:
    bhs = make_bhs(Op.TEXT_RESPONSE, flags=0x80)
    pdu = Pdu(bytes(bhs), b"", b"TargetName=x\0")
    raw = encode(pdu, header_digest=True, data_digest=True)
    assert len(raw) == 48 + 4 + 16 + 4
    assert decode(raw, header_digest=True, data_digest=True).data == pdu.data
    bad = bytearray(raw)
    bad[20] ^= 1
    with pytest.raises(ProtocolError, match="header digest"):
        decode(bytes(bad), header_digest=True, data_digest=True)
    bad = bytearray(raw)
    bad[55] ^= 1
    with pytest.raises(ProtocolError, match="data digest"):
        decode(bytes(bad), header_digest=True, data_digest=True)


def test_reader_splits_a_stream() -> None:
    one = encode(Pdu(bytes(make_bhs(Op.NOP_IN, flags=0x80)), b"", b"abc"))
    two = encode(Pdu(bytes(make_bhs(Op.DATA_IN, flags=0x80)), b"\0" * 8, b""))
    reader = PduReader()
    stream = one + two
    got = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        pdu = reader.next()
        if pdu is not None:
            got.append(pdu)
    assert [p.opcode for p in got] == [Op.NOP_IN, Op.DATA_IN]
    assert got[0].data == b"abc" and got[1].ahs == b"\0" * 8
    assert reader.needed() == 48


@settings(max_examples=400)
@given(st.binary(max_size=400), st.booleans(), st.booleans())
def test_fuzzed_bytes_give_a_pdu_or_the_protocol_error(raw: bytes, hd: bool, dd: bool) -> None:
    try:
        pdu = decode(raw, header_digest=hd, data_digest=dd)
    except ProtocolError:
        return
    assert isinstance(pdu, Pdu) and len(pdu.bhs) == 48


@given(
    st.sampled_from([op for op in Op if op >= 0x20]),
    st.integers(0, 255),
    st.binary(max_size=3 * 4).filter(lambda b: len(b) % 4 == 0),
    st.binary(max_size=300),
    st.booleans(),
)
def test_encode_decode_round_trip(op: int, flags: int, ahs: bytes, data: bytes, digests: bool) -> None:
    pdu = Pdu(bytes(make_bhs(op, flags=flags)), ahs, data)
    back = decode(
        encode(pdu, header_digest=digests, data_digest=digests), header_digest=digests, data_digest=digests
    )
    assert (back.opcode, back.flags, back.ahs, back.data) == (op, flags, ahs, data)


# ------------------------------------------------------------------ text keys, CHAP


def test_text_keys() -> None:
    raw = b"TargetName=a\0TargetAddress=1.2.3.4:3260,1\0TargetName=b\0"
    assert decode_keys(raw) == [("TargetName", "a"), ("TargetAddress", "1.2.3.4:3260,1"), ("TargetName", "b")]
    assert decode_keys(encode_keys([("K", "v=w")])) == [("K", "v=w")]
    assert decode_binary("0x0a0B") == b"\x0a\x0b"
    assert decode_binary("0bAAEC") == b"\x00\x01\x02"
    for bad in (b"novalue\0", b"=x\0", b"\xff=1\0"):
        with pytest.raises(ProtocolError):
            decode_keys(bad)
    with pytest.raises(ProtocolError):
        decode_binary("12")


@given(st.binary(max_size=200))
def test_fuzzed_text(raw: bytes) -> None:
    try:
        pairs = decode_keys(raw)
    except ProtocolError:
        return
    assert all(isinstance(k, str) and k for k, _ in pairs)


def test_chap_vector_rfc1994() -> None:
    challenge = bytes(range(16))
    expected = bytes.fromhex("e7f7b3cbaa745c95cc535cfc6d082c08")
    assert chap.response(0x2A, b"secret123456", challenge) == expected
    assert expected == hashlib.md5(b"\x2a" + b"secret123456" + challenge).digest()
    assert chap.verify(0x2A, b"secret123456", challenge, expected)
    assert not chap.verify(0x2B, b"secret123456", challenge, expected)
    with pytest.raises(ProtocolError):
        chap.response(256, b"s", b"c")


def test_negotiation_result_functions() -> None:
    offered = dict(operational_offer(discovery=False))
    params, reply = negotiate(
        offered,
        [
            ("HeaderDigest", "None"),
            ("MaxRecvDataSegmentLength", "65536"),
            ("MaxBurstLength", "131072"),
            ("ImmediateData", "No"),
            ("DefaultTime2Wait", "2"),
            ("TargetPortalGroupTag", "1"),
            ("X-Vendor", "1"),
            ("MaxOutstandingR2T", "Irrelevant"),
        ],
    )
    assert params.max_xmit_data_segment_length == 65536
    assert params.max_burst_length == 131072
    assert params.default_time2wait == 2 and params.target_portal_group_tag == 1
    assert params.immediate_data is False
    assert reply == []
    with pytest.raises(ProtocolError):  # minimum function violated
        negotiate(offered, [("MaxBurstLength", "2000000")])
    with pytest.raises(ProtocolError):  # digest we did not offer
        negotiate(offered, [("HeaderDigest", "CRC32C")])
    with pytest.raises(ProtocolError):  # OR with a Yes must be Yes
        negotiate({**offered, "InitialR2T": "Yes"}, [("InitialR2T", "No")])
    with pytest.raises(ProtocolError):  # AND with a No must be No
        negotiate({**offered, "ImmediateData": "No"}, [("ImmediateData", "Yes")])
    _, reply = negotiate(offered, [("Unknown", "x")])
    assert reply == [("Unknown", "NotUnderstood")]


# ------------------------------------------------------------------ login state machine


def _response(
    request: Pdu,
    keys: list[tuple[str, str]],
    *,
    transit: bool = True,
    csg: int | None = None,
    nsg: int | None = None,
    status: tuple[int, int] = (0, 0),
    tsih: int = 0,
    stat_sn: int = 7,
) -> Pdu:
    req_csg = (request.flags >> 2) & 3
    csg = req_csg if csg is None else csg
    nsg = (request.flags & 3) if nsg is None else nsg
    bhs = make_bhs(Op.LOGIN_RESPONSE, flags=(0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0))
    bhs[8:14] = request.bhs[8:14]
    struct.pack_into(">H", bhs, 14, tsih)
    bhs[16:20] = request.bhs[16:20]
    struct.pack_into(">III", bhs, 24, stat_sn, 1, 5)
    bhs[36], bhs[37] = status
    return Pdu(bytes(bhs), b"", encode_keys(keys))


def _keys(pdu: Pdu) -> dict[str, str]:
    return dict(decode_keys(pdu.data))


def _counter_rng() -> Callable[[int], bytes]:
    state = [0]

    def rng(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] + i) & 0xFF for i in range(n))

    return rng


def test_login_without_authentication() -> None:
    login = Login(LoginSettings(INITIATOR, TARGET, isid=ISID), itt=3)
    first = login.start()
    assert first.bhs[0] == 0x43 and first.flags == 0x81  # T, CSG 0 -> NSG 1
    assert _keys(first) == {
        "InitiatorName": INITIATOR,
        "SessionType": "Normal",
        "TargetName": TARGET,
        "AuthMethod": "None",
    }
    op = login.receive(_response(first, [("AuthMethod", "None"), ("TargetPortalGroupTag", "1")]))
    assert op is not None and op.flags == 0x87
    assert _keys(op)["MaxRecvDataSegmentLength"] == "262144"
    assert op.u32(28) == 8  # ExpStatSN = StatSN + 1
    done = login.receive(_response(op, [("MaxRecvDataSegmentLength", "8192")], tsih=0x100))
    assert done is None and login.result is not None
    assert login.result.tsih == 0x100 and login.result.auth == "None"
    assert login.result.params.target_portal_group_tag == 1


def test_login_mutual_chap_verifies_the_target() -> None:
    mine, theirs = Chap("alice", Secret("alice-secret-1")), Chap("tgt", Secret("target-secret-2"))
    rng = _counter_rng()
    login = Login(LoginSettings(INITIATOR, TARGET, chap=mine, reverse_chap=theirs, isid=ISID), rng=rng)
    first = login.start()
    assert _keys(first)["AuthMethod"] == "CHAP"
    step = login.receive(_response(first, [("AuthMethod", "CHAP")], transit=False))
    assert step is not None and _keys(step) == {"CHAP_A": "5"}
    challenge = bytes(16)
    step = login.receive(
        _response(step, [("CHAP_A", "5"), ("CHAP_I", "9"), ("CHAP_C", "0x" + challenge.hex())], transit=False)
    )
    assert step is not None
    keys = _keys(step)
    assert keys["CHAP_N"] == "alice"
    assert keys["CHAP_R"] == "0x" + chap.response(9, b"alice-secret-1", challenge).hex()
    ours_id, ours_c = int(keys["CHAP_I"]), decode_binary(keys["CHAP_C"])
    assert ours_c != challenge
    proof = chap.response(ours_id, b"target-secret-2", ours_c)
    op = login.receive(_response(step, [("CHAP_N", "tgt"), ("CHAP_R", "0x" + proof.hex())], nsg=1))
    assert op is not None and op.flags == 0x87
    assert login.receive(_response(op, [], tsih=1)) is None
    assert login.result is not None and login.result.auth == "CHAP (mutual)"


@pytest.mark.parametrize(
    ("name", "secret", "match"),
    [
        ("tgt", b"wrong-secret-99", "does not know the reverse secret"),
        ("other", b"target-secret-2", "not as"),
    ],
)
def test_login_mutual_chap_refuses_a_false_target(name: str, secret: bytes, match: str) -> None:
    login = Login(
        LoginSettings(
            INITIATOR,
            TARGET,
            chap=Chap("a", Secret("alice-secret-1")),
            reverse_chap=Chap("tgt", Secret("target-secret-2")),
        ),
        rng=_counter_rng(),
    )
    step = login.receive(_response(login.start(), [("AuthMethod", "CHAP")], transit=False))
    assert step is not None
    step = login.receive(
        _response(step, [("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0x00ff")], transit=False)
    )
    assert step is not None
    keys = _keys(step)
    proof = chap.response(int(keys["CHAP_I"]), secret, decode_binary(keys["CHAP_C"]))
    with pytest.raises(AuthenticationFailed, match=match):
        login.receive(_response(step, [("CHAP_N", name), ("CHAP_R", "0x" + proof.hex())], nsg=1))


def test_login_mutual_chap_without_target_chap() -> None:
    login = Login(
        LoginSettings(
            INITIATOR, TARGET, chap=Chap("a", Secret("s" * 12)), reverse_chap=Chap("t", Secret("r" * 12))
        )
    )
    with pytest.raises(AuthenticationFailed, match="cannot prove itself"):
        login.receive(_response(login.start(), [("AuthMethod", "None")]))


def test_login_status_and_redirect() -> None:
    login = Login(LoginSettings(INITIATOR, TARGET, isid=ISID))
    first = login.start()
    with pytest.raises(LoginFailed) as failed:
        login.receive(_response(first, [], status=(2, 2)))
    assert failed.value.status_name == "authorization failure"
    assert "ACL" in str(failed.value)
    login = Login(LoginSettings(INITIATOR, TARGET, isid=ISID))
    with pytest.raises(LoginRedirect) as moved:
        login.receive(_response(login.start(), [("TargetAddress", "[fd00::2]:3261,1")], status=(1, 2)))
    assert (moved.value.address, moved.value.port, moved.value.permanent) == ("fd00::2", 3261, True)


def test_every_status_has_a_plain_cause() -> None:
    for (klass, detail), status in STATUS.items():
        assert status.name and len(status.text) > 15, (klass, detail)
        assert status.code is not None and (status.status_class, status.status_detail) == (klass, detail)
    assert {(code >> 8, code & 0xFF) for code in Code} == set(STATUS)
    unknown = status_of(2, 0x42)
    assert "initiator error" in unknown.name and "0x42" in unknown.name and unknown.text
    assert unknown.code is None and unknown.cause is StatusCause.REJECTED
    assert status_of(9, 9).name.startswith("unknown")
    assert status_of(2, 2).hex == "0x0202"


def test_target_address_forms() -> None:
    assert parse_target_address("10.0.0.1:3261,2") == ("10.0.0.1", 3261, 2)
    assert parse_target_address("10.0.0.1") == ("10.0.0.1", 3260, None)
    assert parse_target_address("[::1]:5,1") == ("::1", 5, 1)
    assert parse_target_address("fe80::1") == ("fe80::1", 3260, None)
    with pytest.raises(ProtocolError):
        parse_target_address("[::1")


def test_random_isid_is_random_format() -> None:
    isids = {random_isid() for _ in range(50)}
    assert len(isids) == 50
    assert all(i[0] >> 6 == 0b10 for i in isids)


@settings(max_examples=300)
@given(st.integers(0, 3), st.binary(min_size=48, max_size=48), st.binary(max_size=120))
def test_fuzzed_login_responses(steps: int, bhs: bytes, data: bytes) -> None:
    """Any response at any step ends in a request, completion or an iscsiboot error."""
    login = Login(
        LoginSettings(
            INITIATOR, TARGET, chap=Chap("a", Secret("s" * 12)), reverse_chap=Chap("t", Secret("r" * 12))
        )
    )
    request = login.start()
    script = [[("AuthMethod", "CHAP")], [("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0x01")]]
    for keys in script[:steps]:
        step = login.receive(_response(request, keys, transit=False))
        assert step is not None
        request = step
    raw = bytearray(bhs)
    raw[0] = (raw[0] & 0x3F) | 0x20
    raw[4] = 0
    try:
        pdu = Pdu(bytes(raw), b"", data)
        login.receive(pdu)
    except IscsibootError:
        pass


# ------------------------------------------------------------------ SCSI data


def test_scsi_parsers() -> None:
    inq = bytes([0, 0, 5, 2, 31, 0, 0, 0]) + b"IET     " + b"VIRTUAL-DISK    " + b"0001"
    parsed = scsi.parse_inquiry(inq)
    assert (parsed.vendor, parsed.product, parsed.revision, parsed.type_name) == (
        "IET",
        "VIRTUAL-DISK",
        "0001",
        "disk",
    )
    luns = struct.pack(">I4x", 16) + bytes(8) + bytes.fromhex("0001000000000000")
    assert scsi.parse_report_luns(luns) == (0, 1)
    assert scsi.parse_report_luns(struct.pack(">I4x", 8) + bytes.fromhex("4105000000000000")) == (0x105,)
    cap = scsi.parse_read_capacity16(struct.pack(">QI", 131071, 512) + bytes(20))
    assert cap.bytes == 64 << 20
    assert scsi.parse_read_capacity10(struct.pack(">II", 99, 4096)).blocks == 100
    sense = scsi.parse_sense(
        struct.pack(">H", 18) + bytes([0x70, 0, 0x05]) + bytes(9) + bytes([0x24, 0]) + bytes(4)
    )
    assert sense is not None and sense.key == 5 and "illegal request" in str(sense)
    assert scsi.read10_cdb(1, 2) == bytes.fromhex("28000000000100000200")
    assert scsi.read16_cdb(1 << 33, 1)[:10] == bytes.fromhex("88000000000200000000")
    vpd = bytes([0, 0x83, 0, 12, 2, 1, 0, 8]) + b"IET     "
    assert scsi.parse_device_identification(vpd)[0].text == "IET"


@given(st.binary(max_size=80))
def test_fuzzed_scsi_data(raw: bytes) -> None:
    for parse in (
        scsi.parse_inquiry,
        scsi.parse_report_luns,
        scsi.parse_read_capacity10,
        scsi.parse_read_capacity16,
        scsi.parse_device_identification,
    ):
        with contextlib.suppress(ProtocolError):
            parse(raw)
    scsi.parse_sense(raw)


def test_params_defaults_are_rfc_values() -> None:
    p = Params()
    assert (p.max_burst_length, p.first_burst_length, p.default_time2retain) == (262144, 65536, 20)


def test_login_continued_response_and_extra_operational_round() -> None:
    login = Login(LoginSettings(INITIATOR, TARGET, isid=ISID))
    first = login.start()
    # the target splits its answer (C bit) and we ask for the rest with an empty PDU
    part = _response(first, [], transit=False)
    cont = Pdu(bytes([part.bhs[0], 0x40 | part.bhs[1]]) + part.bhs[2:], b"", b"AuthMeth")
    more = login.receive(cont)
    assert more is not None and more.data == b"" and not more.flags & 0x80
    rest = _response(more, [], transit=True, csg=0, nsg=1)
    op = login.receive(Pdu(rest.bhs, b"", b"od=None\0"))  # "AuthMeth" + "od=None"
    assert op is not None and op.flags == 0x87
    # the target stays in the operational stage and offers a key of its own
    again = login.receive(_response(op, [("MaxRecvDataSegmentLength", "65536"), ("X-Odd", "1"),
                                         ("DefaultTime2Retain", "0")], transit=False, csg=1))  # fmt: skip
    assert again is not None and again.flags == 0x87
    assert ("DefaultTime2Retain", "0") not in decode_keys(again.data)  # we offered it: nothing to answer
    assert login.receive(_response(again, [], tsih=9)) is None
    assert login.result is not None and login.result.params.max_xmit_data_segment_length == 65536


def test_read_capacity16_of_an_empty_lun_has_no_blocks() -> None:
    """tgt answers a 0-byte LUN with a last LBA of 0 - 1: no blocks, not 2**64 of them."""
    empty = scsi.parse_read_capacity16(struct.pack(">QI", 2**64 - 1, 512) + bytes(20))
    assert (empty.blocks, empty.bytes) == (0, 0)
    one = scsi.parse_read_capacity16(struct.pack(">QI", 0, 512) + bytes(20))
    assert (one.blocks, one.bytes) == (1, 512)
