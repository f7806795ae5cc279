"""The iSCSI login as a sans-I/O state machine (RFC 7143 §6.3, §11.12-11.13).

:class:`Login` produces Login Request PDUs and consumes Login Responses; it
never touches a socket, so the same code serves the Python session and a
kernel-mediated login.  Flow: security stage (``AuthMethod`` None or CHAP, with
mutual CHAP when reverse credentials are given, whose proof we verify), then
the operational stage (the keys of :func:`iscsiboot.iscsi.text.operational_offer`),
then full feature phase.  A non-zero status becomes :class:`LoginFailed` with a
plain-language cause; a redirect becomes :class:`LoginRedirect`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi import chap as chapmod
from iscsiboot.iscsi.pdu import Op, Pdu, ProtocolError, make_bhs
from iscsiboot.iscsi.status import status_of
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
from iscsiboot.model import DEFAULT_PORT, Chap

SECURITY = 0
OPERATIONAL = 1
FULL_FEATURE = 3
MAX_LOGIN_DATA = 8192
MAX_EXCHANGES = 16

Random = Callable[[int], bytes]


def random_isid(rng: Random = os.urandom) -> bytes:
    """A random-format ISID (type 10b): never equal to open-iscsi's or iPXE's, so a
    diagnostic login never reinstates (kills) a live boot session."""
    raw = bytearray(rng(6))
    raw[0] = 0x80 | (raw[0] & 0x3F)
    return bytes(raw)


class LoginFailed(IscsibootError):
    """The target ended the login with a non-zero status."""

    def __init__(self, status_class: int, status_detail: int, *, target: str | None = None) -> None:
        status = status_of(status_class, status_detail)
        super().__init__(
            f"login refused: {status.name} ({status.hex}): {status.text}",
            where=target,
            fix=status.fix or None,
        )
        self.status = status
        self.status_class = status_class
        self.status_detail = status_detail
        self.status_name = status.name


class LoginRedirect(IscsibootError):
    """The target answered 0x0101/0x0102 with TargetAddress=host[:port][,tpgt]."""

    def __init__(self, address: str, port: int, *, permanent: bool) -> None:
        kind = "permanently" if permanent else "temporarily"
        super().__init__(f"target moved {kind} to {address}:{port}")
        self.address = address
        self.port = port
        self.permanent = permanent


class AuthenticationFailed(IscsibootError):
    """Our side refused: the target failed to prove itself (mutual CHAP) or offered no usable method."""


def parse_target_address(value: str) -> tuple[str, int, int | None]:
    """``host[:port][,tpgt]`` (IPv6 in brackets) -> (host, port, tpgt)."""
    addr, _, tag = value.partition(",")
    tpgt = decode_number(tag) if tag else None
    if addr.startswith("["):
        host, sep, rest = addr[1:].partition("]")
        if not sep:
            raise ProtocolError(f"TargetAddress {value[:60]!r} has an unclosed bracket")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, _, port_text = addr.partition(":")
    else:
        host, port_text = addr, ""
    port = decode_number(port_text) if port_text else DEFAULT_PORT
    if not host or not 0 < port < 65536:
        raise ProtocolError(f"TargetAddress {value[:60]!r} is not host[:port]")
    return host, port, tpgt


# ---------------------------------------------------------------- the state machine


@dataclass(frozen=True)
class LoginSettings:
    initiator: str
    target: str | None  # None: a Discovery session
    chap: Chap | None = None
    reverse_chap: Chap | None = None
    isid: bytes = b"\x80\x00\x00\x00\x00\x01"
    digests: bool = False
    max_recv: int = 262144
    cmd_sn: int = 1

    @property
    def discovery(self) -> bool:
        return self.target is None


@dataclass(frozen=True)
class LoginResult:
    params: Params
    tsih: int
    cmd_sn: int  # the next CmdSN to use (= the login's; login PDUs are immediate)
    exp_stat_sn: int
    max_cmd_sn: int
    auth: str  # "None" | "CHAP" | "CHAP (mutual)"
    isid: bytes = b""  # the session's ISID (a new login with it reinstates the session)


def _status(pdu: Pdu) -> tuple[int, int]:
    return pdu.bhs[36], pdu.bhs[37]


class Login:
    """Drive one login: :meth:`start` gives the first request; feed each response to
    :meth:`receive`, which gives the next request or None when :attr:`result` is set."""

    def __init__(self, settings: LoginSettings, *, rng: Random = os.urandom, itt: int = 0) -> None:
        if len(settings.isid) != 6:
            raise ProtocolError("an ISID has 6 bytes")
        if settings.reverse_chap is not None and settings.chap is None:
            raise ProtocolError("mutual CHAP needs one-way CHAP credentials too")
        self.s = settings
        self.rng = rng
        self.itt = itt
        self.stage = SECURITY
        self.exp_stat_sn = 0
        self.result: LoginResult | None = None
        self.tsih = 0
        self._step = "start"
        self._exchanges = 0
        self._partial = b""
        self._our_challenge = b""
        self._our_ident = 0
        self._offered: dict[str, str] = {}
        self._params = Params()
        self._auth = "None"

    # -- building requests

    def _request(self, csg: int, nsg: int | None, keys: list[tuple[str, str]], *, cont: bool = False) -> Pdu:
        flags = (csg & 3) << 2
        if nsg is not None:
            flags |= 0x80 | (nsg & 3)
        if cont:
            flags |= 0x40
        bhs = make_bhs(Op.LOGIN_REQUEST, immediate=True, flags=flags)
        bhs[2] = 0  # version max
        bhs[3] = 0  # version min
        bhs[8:14] = self.s.isid
        struct.pack_into(">H", bhs, 14, self.tsih)
        struct.pack_into(">I", bhs, 16, self.itt)
        struct.pack_into(">H", bhs, 20, 0)  # CID
        struct.pack_into(">I", bhs, 24, self.s.cmd_sn)
        struct.pack_into(">I", bhs, 28, self.exp_stat_sn)
        data = encode_keys(keys)
        if len(data) > MAX_LOGIN_DATA:
            raise ProtocolError("login keys do not fit one 8192-byte PDU")
        self._exchanges += 1
        if self._exchanges > MAX_EXCHANGES:
            raise ProtocolError(f"the login did not finish within {MAX_EXCHANGES} exchanges")
        return Pdu(bytes(bhs), b"", data)

    def _leading_keys(self) -> list[tuple[str, str]]:
        keys = [("InitiatorName", self.s.initiator)]
        if self.s.discovery:
            keys.append(("SessionType", "Discovery"))
        else:
            keys += [("SessionType", "Normal"), ("TargetName", str(self.s.target))]
        return keys

    def _operational(self, leading: bool) -> Pdu:
        self.stage = OPERATIONAL
        self._step = "operational"
        keys = operational_offer(discovery=self.s.discovery, digests=self.s.digests, max_recv=self.s.max_recv)
        self._offered = dict(keys)
        return self._request(OPERATIONAL, FULL_FEATURE, (self._leading_keys() if leading else []) + keys)

    def start(self) -> Pdu:
        if self.s.chap is None:
            method = "None"
        elif self.s.reverse_chap is None:
            method = "CHAP,None"
        else:
            method = "CHAP"
        self._step = "auth-method"
        return self._request(SECURITY, OPERATIONAL, [*self._leading_keys(), ("AuthMethod", method)])

    # -- consuming responses

    def receive(self, pdu: Pdu) -> Pdu | None:
        if self.result is not None:
            raise ProtocolError("login response after the login finished")
        if pdu.opcode == Op.REJECT:
            raise ProtocolError(f"the target rejected a login request (reason 0x{pdu.bhs[2]:02x})")
        if pdu.opcode != Op.LOGIN_RESPONSE:
            raise ProtocolError(f"expected a Login Response, got {pdu.name()}")
        if pdu.itt != self.itt:
            raise ProtocolError("Login Response for another task tag")
        status_class, status_detail = _status(pdu)
        keys_raw = self._partial + pdu.data
        if status_class == 1:
            pairs = decode_keys(keys_raw)
            address = dict(pairs).get("TargetAddress")
            if not address:
                raise ProtocolError("redirect without TargetAddress")
            host, port, _ = parse_target_address(address)
            raise LoginRedirect(host, port, permanent=status_detail == 2)
        if status_class != 0:
            raise LoginFailed(status_class, status_detail, target=self.s.target)
        if pdu.bhs[8:14] != self.s.isid:
            raise ProtocolError("Login Response carries another ISID")
        if pdu.bhs[3] != 0:
            raise ProtocolError(f"the target chose protocol version {pdu.bhs[3]}")
        self.exp_stat_sn = (pdu.stat_sn + 1) & 0xFFFFFFFF
        flags = pdu.flags
        transit, cont = bool(flags & 0x80), bool(flags & 0x40)
        csg, nsg = (flags >> 2) & 3, flags & 3
        if cont:
            if transit:
                raise ProtocolError("Login Response with both T and C set")
            self._partial = keys_raw
            return self._request(csg, None, [])
        self._partial = b""
        pairs = decode_keys(keys_raw)
        if csg != self.stage:
            raise ProtocolError(f"the target answered for stage {csg} while we are in stage {self.stage}")
        if self.stage == SECURITY:
            return self._security(pairs, transit, nsg)
        return self._operational_answer(pdu, pairs, transit, nsg)

    def _security(self, pairs: list[tuple[str, str]], transit: bool, nsg: int) -> Pdu | None:
        keys = dict(pairs)
        if "TargetPortalGroupTag" in keys:
            self._params, _ = negotiate(
                {}, [("TargetPortalGroupTag", keys["TargetPortalGroupTag"])], self._params
            )
        if self._step == "auth-method":
            method = keys.get("AuthMethod")
            if method == "CHAP":
                if self.s.chap is None:
                    raise ProtocolError("the target chose CHAP, which we did not offer")
                self._step = "chap-a"
                return self._request(SECURITY, None, [("CHAP_A", str(chapmod.MD5))])
            if method in ("None", None):
                if self.s.reverse_chap is not None:
                    raise AuthenticationFailed(
                        "the target does not use CHAP, so it cannot prove itself (mutual CHAP)",
                        fix="bind the initiator's CHAP account on the target, "
                        "or drop the reverse credentials",
                    )
                if method is None and not transit:
                    raise ProtocolError("the target did not answer AuthMethod")
                return self._after_security(transit, nsg)
            if method == "Reject":
                raise AuthenticationFailed(
                    "the target rejected every offered authentication method",
                    fix="give CHAP credentials"
                    if self.s.chap is None
                    else "check the target's CHAP settings",
                )
            raise ProtocolError(f"the target chose AuthMethod={method[:40]}, which we did not offer")
        if self._step == "chap-a":
            try:
                algorithm = decode_number(keys["CHAP_A"])
                ident = decode_number(keys["CHAP_I"])
                challenge = decode_binary(keys["CHAP_C"])
            except KeyError as missing:
                raise ProtocolError(f"the target's CHAP challenge lacks {missing.args[0]}") from None
            if algorithm != chapmod.MD5:
                raise ProtocolError(f"the target chose CHAP algorithm {algorithm}, not MD5")
            if not challenge:
                raise ProtocolError("the target sent an empty CHAP challenge")
            assert self.s.chap is not None
            answer = chapmod.response(ident, self.s.chap.password.reveal().encode(), challenge)
            out = [("CHAP_N", self.s.chap.username), ("CHAP_R", encode_binary(answer))]
            if self.s.reverse_chap is not None:
                our = self.rng(chapmod.CHALLENGE_LEN)
                while our == challenge:  # never reflect the target's challenge
                    our = self.rng(chapmod.CHALLENGE_LEN)
                self._our_challenge = our
                self._our_ident = self.rng(1)[0]
                out += [("CHAP_I", str(self._our_ident)), ("CHAP_C", encode_binary(our))]
            self._step = "chap-r"
            self._auth = "CHAP"
            return self._request(SECURITY, OPERATIONAL, out)
        if self._step == "chap-r":
            if self.s.reverse_chap is not None:
                self._verify_target(keys)
                self._auth = "CHAP (mutual)"
            if not transit:
                raise ProtocolError("the target did not finish the security stage after CHAP")
            return self._after_security(transit, nsg)
        raise ProtocolError(f"unexpected Login Response in step {self._step}")

    def _verify_target(self, keys: dict[str, str]) -> None:
        assert self.s.reverse_chap is not None
        name, proof = keys.get("CHAP_N"), keys.get("CHAP_R")
        if name is None or proof is None:
            raise AuthenticationFailed(
                "the target did not answer our CHAP challenge (mutual CHAP)",
                fix="bind the reverse (outgoing) CHAP account on the target",
            )
        if name != self.s.reverse_chap.username:
            raise AuthenticationFailed(
                f"the target proved itself as {name!r}, "
                f"not as {self.s.reverse_chap.username!r} (mutual CHAP)",
                fix="use the target's outgoing CHAP user name as the reverse user name",
            )
        if not chapmod.verify(
            self._our_ident,
            self.s.reverse_chap.password.reveal().encode(),
            self._our_challenge,
            decode_binary(proof),
        ):
            raise AuthenticationFailed(
                "the target's CHAP answer is wrong: it does not know the reverse secret (mutual CHAP)",
                fix="use the target's outgoing CHAP secret as the reverse password",
            )
        assert self.s.chap is not None
        if chapmod.verify(
            self._our_ident, self.s.chap.password.reveal().encode(), self._our_challenge, decode_binary(proof)
        ) and (self.s.chap.password != self.s.reverse_chap.password):
            raise AuthenticationFailed("the target answered with the initiator's own secret")

    def _after_security(self, transit: bool, nsg: int) -> Pdu | None:
        if not transit:
            # The target wants to stay in the security stage without asking anything.
            return self._request(SECURITY, OPERATIONAL, [])
        if nsg == FULL_FEATURE:
            raise ProtocolError("the target skipped the operational stage we asked for")
        if nsg != OPERATIONAL:
            raise ProtocolError(f"the target moved to stage {nsg}")
        return self._operational(False)

    def _operational_answer(
        self, pdu: Pdu, pairs: list[tuple[str, str]], transit: bool, nsg: int
    ) -> Pdu | None:
        self._params, reply = negotiate(self._offered, pairs, self._params)
        if transit and nsg == FULL_FEATURE:
            self.result = LoginResult(
                params=self._params,
                tsih=pdu.u16(14),
                cmd_sn=self.s.cmd_sn,
                exp_stat_sn=self.exp_stat_sn,
                max_cmd_sn=pdu.max_cmd_sn,
                auth=self._auth,
                isid=self.s.isid,
            )
            if self.result.tsih == 0:
                raise ProtocolError("the final Login Response has TSIH 0")
            return None
        if transit:
            raise ProtocolError(f"the target moved to stage {nsg} from the operational stage")
        return self._request(OPERATIONAL, FULL_FEATURE, reply)
