"""iSCSI text keys (RFC 7143 §6): ``key=value`` pairs, values, and negotiation results.

Pure.  :func:`encode_keys`/:func:`decode_keys` convert the NUL-separated data
segment of Login and Text PDUs; :func:`negotiate` applies the result function
of each operational key in the reference's list to our offer and the target's
answer.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from iscsiboot.iscsi.pdu import ProtocolError

MAX_BINARY = 1024
# What a normal session offers for writes (the target may answer less)
MAX_BURST_OFFER = 1024 * 1024
FIRST_BURST_OFFER = 256 * 1024
MAX_OUTSTANDING_R2T_OFFER = 4


def encode_keys(pairs: Iterable[tuple[str, str]]) -> bytes:
    out = bytearray()
    for key, value in pairs:
        if "=" in key or "\0" in key or "\0" in value or not key:
            raise ProtocolError(f"key {key!r} cannot be encoded")
        out += f"{key}={value}".encode() + b"\0"
    return bytes(out)


def decode_keys(data: bytes) -> list[tuple[str, str]]:
    """Pairs in order; repeated keys (SendTargets' TargetName/TargetAddress) are kept."""
    pairs: list[tuple[str, str]] = []
    for chunk in data.split(b"\0"):
        if not chunk:
            continue
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("text key is not UTF-8") from None
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ProtocolError(f"text item {text[:40]!r} is not key=value")
        pairs.append((key, value))
    return pairs


def decode_number(value: str) -> int:
    """An RFC 7143 number: ASCII decimal or ``0x`` hex (not other scripts' digits, signs or ``_``)."""
    if re.fullmatch(r"[0-9]{1,20}|0[xX][0-9A-Fa-f]{1,16}", value) is None:
        raise ProtocolError(f"{value[:40]!r} is not a number")
    return int(value[2:], 16) if value[:2] in ("0x", "0X") else int(value, 10)


def decode_binary(value: str) -> bytes:
    """A ``0x...`` (hex) or ``0b...`` (base64) value."""
    try:
        if value[:2] in ("0x", "0X"):
            digits = value[2:]
            if len(digits) % 2:
                digits = "0" + digits
            raw = bytes.fromhex(digits)
        elif value[:2] in ("0b", "0B"):
            raw = base64.b64decode(value[2:], validate=True)
        else:
            raise ValueError(value)
    except (ValueError, binascii.Error):
        raise ProtocolError(f"{value[:40]!r} is not a binary value (0x... or 0b...)") from None
    if len(raw) > MAX_BINARY:
        raise ProtocolError(f"binary value longer than {MAX_BINARY} bytes")
    return raw


def encode_binary(raw: bytes) -> str:
    return "0x" + raw.hex()


# ---------------------------------------------------------------- operational negotiation


@dataclass(frozen=True)
class Params:
    """What the login settled on (defaults are RFC 7143's)."""

    header_digest: bool = False
    data_digest: bool = False
    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_recv_data_segment_length: int = 8192  # what we declared
    max_xmit_data_segment_length: int = 8192  # what the target declared
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    target_portal_group_tag: int | None = None
    target_alias: str | None = None


_MIN = ("MaxConnections", "MaxBurstLength", "FirstBurstLength", "DefaultTime2Retain",
        "MaxOutstandingR2T", "ErrorRecoveryLevel")  # fmt: skip
_MAX = ("DefaultTime2Wait",)
_OR = ("InitialR2T", "DataPDUInOrder", "DataSequenceInOrder")
_AND = ("ImmediateData",)
_LIST = ("HeaderDigest", "DataDigest")
_WRITE_KEYS = ("InitialR2T", "ImmediateData", "FirstBurstLength", "MaxBurstLength", "MaxOutstandingR2T")
_FIELD = {
    "HeaderDigest": "header_digest",
    "DataDigest": "data_digest",
    "MaxConnections": "max_connections",
    "InitialR2T": "initial_r2t",
    "ImmediateData": "immediate_data",
    "MaxBurstLength": "max_burst_length",
    "FirstBurstLength": "first_burst_length",
    "DefaultTime2Wait": "default_time2wait",
    "DefaultTime2Retain": "default_time2retain",
    "MaxOutstandingR2T": "max_outstanding_r2t",
    "DataPDUInOrder": "data_pdu_in_order",
    "DataSequenceInOrder": "data_sequence_in_order",
    "ErrorRecoveryLevel": "error_recovery_level",
}
SPECIAL = ("Reject", "Irrelevant", "NotUnderstood")


def operational_offer(
    *, discovery: bool, digests: bool = False, max_recv: int = 262144
) -> list[tuple[str, str]]:
    """The keys we send in the operational stage (all defaults explicit, as robust initiators do)."""
    digest = "CRC32C" if digests else "None"  # digests=True insists on CRC32C
    keys = [
        ("HeaderDigest", digest),
        ("DataDigest", digest),
        ("MaxRecvDataSegmentLength", str(max_recv)),
        ("DefaultTime2Wait", "0"),
        ("DefaultTime2Retain", "0"),
    ]
    if not discovery:
        keys += [
            ("MaxConnections", "1"),
            # The fast path for writes; the result functions let a target insist on R2Ts
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", str(MAX_BURST_OFFER)),
            ("FirstBurstLength", str(FIRST_BURST_OFFER)),
            ("MaxOutstandingR2T", str(MAX_OUTSTANDING_R2T_OFFER)),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("ErrorRecoveryLevel", "0"),
        ]
    return keys


def _bool(value: str, key: str) -> bool:
    if value == "Yes":
        return True
    if value == "No":
        return False
    raise ProtocolError(f"{key}={value[:40]} is not Yes or No")


def negotiate(
    offered: Mapping[str, str], answers: Iterable[tuple[str, str]], current: Params | None = None
) -> tuple[Params, list[tuple[str, str]]]:
    """Fold the target's answers into :class:`Params`.

    Returns the new params and the keys we must answer (keys the target offered
    on its own; we answer them with the result value, or ``NotUnderstood``).
    """
    values = dict(vars(current or Params()))
    if "MaxRecvDataSegmentLength" in offered:
        values["max_recv_data_segment_length"] = decode_number(offered["MaxRecvDataSegmentLength"])
    for key, offer in offered.items():
        # A key the target leaves unanswered keeps our offer, except those that shape how
        # a write sends its data: they stay at RFC 7143's defaults, which a target assumes too.
        if key in _FIELD and key not in _LIST and key not in _WRITE_KEYS:
            values[_FIELD[key]] = _bool(offer, key) if offer in ("Yes", "No") else decode_number(offer)
    reply: list[tuple[str, str]] = []
    for key, value in answers:
        if key == "TargetPortalGroupTag":
            values["target_portal_group_tag"] = decode_number(value)
            continue
        if key == "TargetAlias":
            values["target_alias"] = value
            continue
        if key == "MaxRecvDataSegmentLength":  # declarative: the target's receive limit
            limit = decode_number(value)
            if not 512 <= limit <= MAX_DATA_SEGMENT_LEN:
                raise ProtocolError(f"MaxRecvDataSegmentLength={limit} is out of range")
            values["max_xmit_data_segment_length"] = limit
            continue
        if key not in _FIELD:
            if key in ("TargetAddress", "TargetName", "AuthMethod") or key.startswith(("CHAP_", "X-", "X#")):
                continue
            reply.append((key, "NotUnderstood"))
            continue
        if value in ("Irrelevant", "NotUnderstood"):
            continue
        if value == "Reject":
            raise ProtocolError(f"the target rejected {key}={offered.get(key, '?')}")
        name = _FIELD[key]
        if key in _LIST:
            choice = value.split(",")[0]
            allowed = offered.get(key, "None").split(",")
            if choice not in allowed:
                raise ProtocolError(f"the target chose {key}={choice}, which was not offered")
            values[name] = choice == "CRC32C"
            if key not in offered:
                reply.append((key, choice))
        elif key in _OR or key in _AND:
            answer = _bool(value, key)
            if key in offered:
                ours = _bool(offered[key], key)
                expected = (ours or answer) if key in _OR else (ours and answer)
                if answer != expected:
                    raise ProtocolError(f"the target answered {key}={value}, the rule gives {expected}")
                values[name] = answer
            else:
                values[name] = answer
                reply.append((key, value))
        else:
            number: int = decode_number(value)
            if key in offered:
                mine = decode_number(offered[key])
                if (key in _MIN and number > mine) or (key in _MAX and number < mine):
                    raise ProtocolError(f"the target answered {key}={number} against our {mine}")
            else:
                reply.append((key, str(number)))
            values[name] = number
    if values["first_burst_length"] > values["max_burst_length"]:
        raise ProtocolError("FirstBurstLength exceeds MaxBurstLength")
    return Params(**values), reply


MAX_DATA_SEGMENT_LEN = (1 << 24) - 1
