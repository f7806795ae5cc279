"""What a hostile or broken target sends: PDU bytes, text keys, login responses fed to the
login state machine, SendTargets answers and SCSI data through a session.  Each ends in a
value or the project's error (ProtocolError and its kin), never showing a CHAP secret."""

from __future__ import annotations

import struct
from collections.abc import Callable

from fuzz_support import budget, clean, edge_text, mutants
from hypothesis import given
from hypothesis import strategies as st
from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi import chap as chapmod
from iscsiboot.iscsi import scsi
from iscsiboot.iscsi.login import Login, LoginSettings, parse_target_address
from iscsiboot.iscsi.pdu import Buffer, Op, Pdu, PduReader, decode, encode, make_bhs
from iscsiboot.iscsi.session import Session
from iscsiboot.iscsi.text import (
    Params,
    decode_binary,
    decode_keys,
    decode_number,
    encode_binary,
    encode_keys,
    negotiate,
    operational_offer,
)
from iscsiboot.iscsi.transport import Sink, TransportError, deliver
from iscsiboot.model import Chap
from iscsiboot.secret import Secret

INITIATOR = "iqn.2024-01.lab.iscsiboot:htpc"
TARGET = "iqn.2024-01.lab.iscsiboot:disk"
SECRET, REVERSE = "Sup3r-S3cret-pw", "Rev3rse-S3cret"
SECRETS = (SECRET, REVERSE)
_KEYS = (
    "AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R", "TargetPortalGroupTag", "TargetAlias",
    "TargetAddress", "TargetName", "HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength",
    "MaxBurstLength", "FirstBurstLength", "InitialR2T", "ImmediateData", "DefaultTime2Wait",
    "ErrorRecoveryLevel", "MaxConnections", "X-com.example.thing", "SendTargets",
)  # fmt: skip
_VALUES = st.one_of(
    edge_text.map(lambda s: s.replace("\0", "")),
    st.sampled_from(
        (
            "Yes",
            "No",
            "None",
            "CRC32C",
            "CRC32C,None",
            "Reject",
            "Irrelevant",
            "NotUnderstood",
            "CHAP",
            "5",
            "0",
            "511",
            "512",
            "16777215",
            "16777216",
            "0x",
            "0x0",
            "0b",
            "0bAA==",
            "9" * 4400,
            "0x" + "ab" * 1030,
            "[fd00::1]:3260,1",
            "10.0.2.2:0",
            "h:65536,x",
        )
    ),
    st.integers().map(str),
)


def _wire(pairs: list[tuple[str, str]]) -> bytes:
    """Pairs as a target may send them: any code point, even a lone surrogate, as bytes."""
    return b"".join(f"{k}={v}".encode("utf-8", "surrogatepass") + b"\0" for k, v in pairs)


key_pairs = st.lists(st.tuples(st.sampled_from(_KEYS) | edge_text, _VALUES), max_size=8)


# ---------------------------------------------------------------- PDU framing


def _sample_pdus() -> tuple[bytes, ...]:
    login = make_bhs(Op.LOGIN_RESPONSE, flags=0x87)
    text = make_bhs(Op.TEXT_RESPONSE, flags=0x80)
    data_in = make_bhs(Op.DATA_IN, flags=0x81)
    nop = make_bhs(Op.NOP_IN, flags=0x80)
    keys = encode_keys([("TargetName", TARGET), ("TargetAddress", "10.0.2.2:3260,1")])
    pdus = [Pdu(bytes(login), b"", keys), Pdu(bytes(text), b"", keys), Pdu(bytes(data_in), b"", bytes(512))]
    pdus.append(Pdu(bytes(nop), b"\0\0\0\0", b"ping"))
    return tuple(
        encode(p, header_digest=hd, data_digest=dd)
        for p in pdus
        for hd in (False, True)
        for dd in (False, True)
    )


PDUS = _sample_pdus()


def _drain(raw: bytes, cuts: list[int], header_digest: bool, data_digest: bool, from_target: bool) -> None:
    reader = PduReader(header_digest=header_digest, data_digest=data_digest, from_target=from_target)
    pos = 0
    for cut in [*cuts, len(raw)]:
        reader.feed(raw[pos : pos + cut])
        pos += cut
        assert reader.needed() >= 0
        while reader.next() is not None:
            pass


@budget(250)
@given(
    st.binary(max_size=600) | st.sampled_from(PDUS).flatmap(lambda p: mutants(p, window=56)),
    st.lists(st.integers(0, 80), max_size=6),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_pdu_stream(raw: bytes, cuts: list[int], hd: bool, dd: bool, from_target: bool) -> None:
    clean(lambda: _drain(raw, cuts, hd, dd, from_target))
    clean(lambda: decode(raw, header_digest=hd, data_digest=dd))


# ---------------------------------------------------------------- text keys


@budget(150)
@given(st.binary(max_size=300) | key_pairs.map(_wire))
def test_text_keys(data: bytes) -> None:
    clean(lambda: decode_keys(data))


@budget(300)
@given(_VALUES)
def test_text_values(value: str) -> None:
    clean(lambda: decode_number(value))
    clean(lambda: decode_binary(value))
    clean(lambda: parse_target_address(value))


@budget(150)
@given(key_pairs, st.booleans(), st.booleans())
def test_negotiation(answers: list[tuple[str, str]], discovery: bool, digests: bool) -> None:
    offered = dict(operational_offer(discovery=discovery, digests=digests))
    clean(lambda: negotiate(offered, answers, Params()))


# ---------------------------------------------------------------- the login, step by step


def _response(
    request: Pdu, keys: list[tuple[str, str]], *, transit: bool, nsg: int = 0, tsih: int = 0, stat_sn: int = 7
) -> Pdu:
    csg = (request.flags >> 2) & 3
    bhs = make_bhs(Op.LOGIN_RESPONSE, flags=(0x80 | nsg if transit else 0) | (csg << 2))
    bhs[8:14] = request.bhs[8:14]
    struct.pack_into(">H", bhs, 14, tsih)
    bhs[16:20] = request.bhs[16:20]
    struct.pack_into(">III", bhs, 24, stat_sn, 1, 5)
    return Pdu(bytes(bhs), b"", encode_keys(keys))


def _honest(request: Pdu, settings: LoginSettings) -> Pdu:
    """What a well-behaved target answers to ``request``."""
    keys = dict(decode_keys(request.data))
    if "AuthMethod" in keys:
        if "CHAP" in keys["AuthMethod"].split(","):
            return _response(request, [("AuthMethod", "CHAP"), ("TargetPortalGroupTag", "1")], transit=False)
        return _response(
            request, [("AuthMethod", "None"), ("TargetPortalGroupTag", "1")], transit=True, nsg=1
        )
    if "CHAP_A" in keys:
        return _response(
            request,
            [("CHAP_A", "5"), ("CHAP_I", "7"), ("CHAP_C", encode_binary(bytes(range(16))))],
            transit=False,
        )
    if "CHAP_R" in keys:
        answer: list[tuple[str, str]] = []
        if "CHAP_C" in keys and settings.reverse_chap is not None:
            proof = chapmod.response(int(keys["CHAP_I"]), REVERSE.encode(), decode_binary(keys["CHAP_C"]))
            answer = [("CHAP_N", settings.reverse_chap.username), ("CHAP_R", encode_binary(proof))]
        return _response(request, answer, transit=True, nsg=1)
    if (request.flags >> 2) & 3 == 1:
        echo = [
            (k, v.split(",")[0])
            for k, v in keys.items()
            if k not in ("InitiatorName", "SessionType", "TargetName")
        ]
        return _response(
            request, [*echo, ("MaxRecvDataSegmentLength", "8192")], transit=True, nsg=3, tsih=0x100
        )
    return _response(request, [], transit=True, nsg=1)


@st.composite
def _spoiled(draw: st.DrawFn, pdu: Pdu) -> Pdu:
    """``pdu`` as a broken or hostile target might send it."""
    kind = draw(st.integers(0, 3))
    bhs, data = pdu.bhs, pdu.data
    if kind == 0:
        bhs = draw(mutants(bhs, edits=4)).ljust(48, b"\0")[:48]
    elif kind == 1:
        data = draw(mutants(data, edits=6)) if data else draw(st.binary(max_size=40))
    elif kind == 2:
        data = _wire(draw(key_pairs))
    else:
        data = _wire([*decode_keys(data), *draw(key_pairs)])
    return Pdu(bhs, b"", data)


@budget(300)
@given(st.data(), st.sampled_from(("none", "chap", "mutual")), st.booleans(), st.integers(0, 5))
def test_login_responses(data: st.DataObject, auth: str, discovery: bool, spoil_at: int) -> None:
    """A login where the target answers honestly until one answer is spoiled (or none is)."""
    settings = LoginSettings(
        INITIATOR,
        None if discovery else TARGET,
        chap=None if auth == "none" else Chap("htpc", Secret(SECRET)),
        reverse_chap=Chap("tgt", Secret(REVERSE)) if auth == "mutual" else None,
    )
    login = Login(settings, rng=lambda n: bytes(range(100, 100 + n)))
    request: Pdu | None = login.start()

    def run() -> None:
        nonlocal request
        for step in range(12):
            assert request is not None
            answer = _honest(request, settings)
            if step == spoil_at:
                answer = data.draw(_spoiled(answer))
            request = login.receive(answer)
            if request is None:
                assert login.result is not None
                return

    clean(run, secrets=SECRETS)


# ---------------------------------------------------------------- a session: SendTargets and SCSI reads


class _Scripted:
    """A transport whose target answers each request through ``answer``; silence ends the connection."""

    def __init__(self, answer: Callable[[Pdu], list[Pdu]]) -> None:
        self.answer = answer
        self.queue: list[Pdu] = []

    def set_digests(self, header: bool, data: bool) -> None:
        pass

    def send(self, pdu: Pdu, *, deadline: float) -> None:
        self.queue += self.answer(pdu)

    def send_parts(self, bhs: bytes, data: Buffer, *, deadline: float) -> None:
        self.send(Pdu(bhs, b"", bytes(data)), deadline=deadline)

    def recv(self, *, deadline: float, sink: Sink | None = None) -> Pdu:
        if not self.queue:
            raise TransportError("the target closed the connection")
        return deliver(self.queue.pop(0), sink)

    def close(self) -> None:
        pass


def _session(answer: Callable[[Pdu], list[Pdu]]) -> Session:
    from iscsiboot.iscsi.login import LoginResult  # noqa: PLC0415

    result = LoginResult(Params(), tsih=1, cmd_sn=1, exp_stat_sn=8, max_cmd_sn=64, auth="None")
    return Session(_Scripted(answer), result, timeout=5.0, portal="10.0.2.2:3260")  # type: ignore[arg-type]


def _reply(request: Pdu, op: Op, flags: int, data: bytes, *, status: int = 0) -> Pdu:
    bhs = make_bhs(op, flags=flags)
    bhs[16:20] = request.bhs[16:20]
    struct.pack_into(">IIII", bhs, 20, 0xFFFFFFFF, 8, request.u32(24) + 1, request.u32(24) + 32)
    bhs[3] = status
    return Pdu(bytes(bhs), b"", data)


@budget(150)
@given(st.data(), st.integers(0, 2))
def test_send_targets(data: st.DataObject, pieces: int) -> None:
    listing = encode_keys([("TargetName", TARGET), ("TargetAddress", "10.0.2.2:3260,1")])

    def answer(request: Pdu) -> list[Pdu]:
        more = data.draw(st.integers(0, pieces)) > 0
        honest = _reply(request, Op.TEXT_RESPONSE, 0x40 if more else 0x80, listing)
        return [data.draw(_spoiled(honest) | st.just(honest))]

    session = _session(answer)
    clean(session.send_targets)


@budget(120)
@given(st.data())
def test_scsi_reads(data: st.DataObject) -> None:
    """INQUIRY, REPORT LUNS and READ CAPACITY answered with spoiled Data-In and SCSI Response PDUs."""

    def answer(request: Pdu) -> list[Pdu]:
        payload = data.draw(st.binary(max_size=64))
        data_in = _reply(request, Op.DATA_IN, 0x81, payload)
        response = _reply(request, Op.SCSI_RESPONSE, 0x80, data.draw(st.binary(max_size=24)))
        return [data.draw(_spoiled(p) | st.just(p)) for p in (data_in, response)]

    session = _session(answer)
    clean(lambda: session.read_capacity(0))
    clean(lambda: session.inquiry(0))
    clean(lambda: session.device_identification(0))
    clean(session.report_luns)


@budget(60, deadline_ms=5000)
@given(st.data())
def test_scsi_limits_and_blocks(data: st.DataObject) -> None:
    """The block limits (four commands) and a read, answered as in :func:`test_scsi_reads`."""

    def answer(request: Pdu) -> list[Pdu]:
        payload = data.draw(st.binary(max_size=64))
        data_in = _reply(request, Op.DATA_IN, 0x81, payload)
        response = _reply(request, Op.SCSI_RESPONSE, 0x80, data.draw(st.binary(max_size=24)))
        return [data.draw(_spoiled(p) | st.just(p)) for p in (data_in, response)]

    session = _session(answer)
    clean(lambda: session.block_limits(0))
    clean(lambda: session.read(0, 0, 1))


@budget(100, deadline_ms=5000)
@given(st.data(), st.booleans(), st.booleans(), st.integers(512, 4096), st.integers(1, 24))
def test_scsi_writes(
    data: st.DataObject, immediate: bool, initial_r2t: bool, segment: int, blocks: int
) -> None:
    """A write answered with R2Ts at drawn offsets and lengths (some beyond the data), spoiled
    R2Ts and responses: the initiator sends, fails with the project's error, or hangs up."""
    params = Params(immediate_data=immediate, initial_r2t=initial_r2t, first_burst_length=2048,
                    max_burst_length=4096, max_xmit_data_segment_length=segment)  # fmt: skip

    def answer(request: Pdu) -> list[Pdu]:
        if request.opcode != Op.SCSI_COMMAND:
            return []
        out: list[Pdu] = []
        for sn in range(data.draw(st.integers(0, 3))):
            r2t = _reply(request, Op.R2T, 0x80, b"")
            fields = (data.draw(st.integers(0, 8)), sn, data.draw(st.integers(0, 16384)),
                      data.draw(st.integers(0, 8192)))  # fmt: skip
            bhs = bytearray(r2t.bhs)
            struct.pack_into(">I", bhs, 20, fields[0])
            struct.pack_into(">III", bhs, 36, *fields[1:])
            out.append(Pdu(bytes(bhs)))
        out.append(_reply(request, Op.SCSI_RESPONSE, 0x80, data.draw(st.binary(max_size=24)),
                          status=data.draw(st.sampled_from((0, 2)))))  # fmt: skip
        return [data.draw(_spoiled(p) | st.just(p)) for p in out]

    session = _session(answer)
    session.params = params
    clean(lambda: session.write(0, 0, bytes(blocks * 512), block_size=512))
    clean(lambda: session.unmap(0, 0, blocks))
    clean(lambda: session.synchronize_cache(0))


@budget(300)
@given(st.binary(max_size=120))
def test_scsi_data(raw: bytes) -> None:
    for parser in (
        scsi.parse_inquiry,
        scsi.parse_device_identification,
        scsi.parse_report_luns,
        scsi.report_luns_length,
        scsi.parse_read_capacity10,
        scsi.parse_read_capacity16,
        scsi.parse_sense,
        scsi.parse_supported_pages,
        scsi.parse_block_limits_page,
        scsi.parse_provisioning_page,
    ):
        result = clean(lambda p=parser: p(raw))  # type: ignore[misc]
        assert not isinstance(result, IscsibootError) or str(result)
