"""Kernel command lines, RFC 4173 root paths and ip= values from arbitrary and mutated text:
a value or the project's ParseError, never a CHAP secret of the input."""

from __future__ import annotations

import string

from cmdline_support import GOLDEN, HOWTO
from fuzz_support import budget, clean, edge_text, no_secret, text_mutants
from hypothesis import assume, given
from hypothesis import strategies as st
from iscsiboot.cmdline.ipconf import parse_ip
from iscsiboot.cmdline.parse import DRACUT_KEYS, SPEC_KEYS, parse, tokenize
from iscsiboot.cmdline.rootpath import parse_root_path
from iscsiboot.errors import IscsibootError

# The command lines the project writes and the forms users paste, one line each.
SAMPLES = tuple(
    line.strip()
    for path in sorted(GOLDEN.glob("*.txt"))
    if path.name not in ("parse.txt",)
    for line in path.read_text().splitlines()
    if line.strip() and not line.startswith("#")
) + tuple(
    line.strip() for line in HOWTO.read_text().splitlines() if line.strip() and not line.startswith("#")
)
ROOT_PATHS = tuple(
    token.split("=", 1)[1] if "=" in token else token
    for line in SAMPLES
    for token in tokenize(line)
    if "iscsi:" in token
)
IP_VALUES = (
    "dhcp",
    "ibft",
    "eth0:dhcp",
    "192.168.1.20::192.168.1.1:255.255.255.0:htpc:eth0:off:192.168.1.1",
    "[fd00::14]::[fd00::1]:64:htpc:eth0:none",
    "10.0.2.15:10.0.2.2:10.0.2.2:24::eth0:off:1500:52:54:00:12:34:56",
)


def _parsed(text: str) -> None:
    clean(lambda: parse(text))


@budget(300)
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    _parsed(text)


@budget(400)
@given(st.sampled_from(SAMPLES).flatmap(text_mutants))
def test_mutated_command_lines(text: str) -> None:
    _parsed(text)


# ---------------------------------------------------------------- token soup from the grammar

_KEYS = (*SPEC_KEYS, *DRACUT_KEYS, "boot", "disk", "root", "netroot", "ip", "BOOTIF", "nameserver",
         "rd.iscsi.firmware", "rd.iscsi.ibft", "iscsi_auto", "iscsi_firmware", "rd.iscsi.param")  # fmt: skip
_VALUES = st.one_of(
    edge_text,
    st.sampled_from(
        ("ISCSI=auto,LABEL=System", "LABEL=System", "UUID=x", "/dev/sda1", "iscsi:", "1", "3260")
    ),
    st.sampled_from(ROOT_PATHS).flatmap(lambda s: text_mutants(s, edits=2)),
    st.sampled_from(IP_VALUES).flatmap(lambda s: text_mutants(s, edits=2)),
)


@st.composite
def _spec(draw: st.DrawFn) -> str:
    items = draw(st.lists(st.tuples(st.sampled_from(tuple(SPEC_KEYS)), _VALUES), max_size=8))
    body = ",".join(f"{k}={v}" for k, v in items)
    tail = draw(st.sampled_from(("", ",LABEL=System", ",UUID=1234", ",/dev/sda1", ",", "auto,LABEL=System")))
    return f"ISCSI={body}{tail}"


@st.composite
def _token(draw: st.DrawFn) -> str:
    key = draw(st.sampled_from(_KEYS))
    if key in ("boot", "disk") and draw(st.booleans()):
        return f"{key}={draw(_spec())}"
    if draw(st.integers(0, 5)) == 0:
        return key
    return f"{key}={draw(_VALUES)}"


@budget(400)
@given(st.lists(_token(), min_size=1, max_size=8), st.booleans())
def test_grammar_token_soup(tokens: list[str], quote: bool) -> None:
    _parsed(" ".join(f'"{t}"' if quote and " " in t else t for t in tokens))


# ---------------------------------------------------------------- secrets never shown

_FRAGMENT = st.text(string.ascii_letters + string.digits, min_size=6, max_size=10)
# What splits a password that a user types carelessly: each piece must stay hidden.
_SPLIT = st.sampled_from((" ", "\t", '"', "'", ",", "@", ":", "=", "\\", "#", ""))
_PASSWORD_KEYS = ("iscsi_password", "iscsi_in_password", "rd.iscsi.password", "rd.iscsi.in.password")
# A password key as a hurried user writes it: the value is still a secret.
_TYPO_KEYS = ("iscsi_pasword", "iscsi_passwd", "iscsi_Password", "iscsi-password", "iscsi_inpassword",
              "iscsi_in_pasword", "rd.iscsi.pasword", "rd.iscsi.in_password", "iscsi_password ")  # fmt: skip


@st.composite
def _secret(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
    pieces = draw(st.lists(_FRAGMENT, min_size=1, max_size=3, unique=True))
    seps = [draw(_SPLIT) for _ in pieces[1:]]
    text = pieces[0] + "".join(sep + piece for sep, piece in zip(seps, pieces[1:], strict=True))
    return text, tuple(pieces)


_SPEC_ITEMS = (
    "iscsi_initiator=iqn.2010-04.org.whatever:mybox",
    "iscsi_target_name=iqn.2000-01.com.synology:pandora.openelec",
    "iscsi_target_ip=192.168.1.14",
    "iscsi_target_port=3260",
    "iscsi_target_group=1",
    "iscsi_username=username",
    "iscsi_in_username=username_in",
)


@st.composite
def _with_secret(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
    """A command line that carries one or two passwords (in every form), often broken around them."""
    secret, pieces = draw(_secret())
    form = draw(st.integers(0, 4))
    key = draw(st.sampled_from(_TYPO_KEYS if form == 4 else _PASSWORD_KEYS))
    if form in (0, 4) and not key.startswith("rd."):  # inside the OpenELEC spec
        items = draw(st.lists(st.sampled_from(_SPEC_ITEMS), max_size=7))
        items.insert(draw(st.integers(0, len(items))), f"{key}={secret}")
        tail = draw(st.sampled_from((",LABEL=System", "", ",UUID=x")))
        line = f"boot=ISCSI={','.join(items)}{tail}"
    elif form in (1, 4):  # separate tokens (Debian, dracut)
        others = draw(st.lists(st.sampled_from(_SPEC_ITEMS), max_size=5))
        tokens = [*others, f"{key}={secret}"]
        tokens = draw(st.permutations(tokens))
        line = " ".join(tokens)
    elif form == 2:  # the credentials of a root path
        user = draw(st.sampled_from(("u", "user", "")))
        auth = f"{user}:{secret}" + draw(st.sampled_from(("", ":r:", ":ruser:rsecret", ":")))
        tail = draw(st.sampled_from(ROOT_PATHS)).removeprefix("iscsi:")
        tail = draw(text_mutants(tail, edits=2)) if draw(st.booleans()) else tail
        line = f"{draw(st.sampled_from(('root', 'netroot')))}=iscsi:{auth}@{tail}"
    else:  # the reverse password of a root path
        tail = draw(st.sampled_from(ROOT_PATHS)).removeprefix("iscsi:")
        line = f"root=iscsi:u:p:r:{secret}@{tail}"
    if draw(st.booleans()):
        line = f'"{line}"' if draw(st.booleans()) else line + " " + draw(st.sampled_from(SAMPLES))
    for piece in pieces:
        assume(line.count(piece) == 1)  # the piece is only where the password is
    return line, pieces


@budget(400)
@given(_with_secret())
def test_no_secret_in_messages(case: tuple[str, tuple[str, ...]]) -> None:
    line, pieces = case
    # A piece that the messages carry whatever the password is belongs to their own words
    # ("cmdlin" of /proc/cmdline): the same line with every piece blanked out says which.
    blanked = line
    for piece in pieces:
        blanked = blanked.replace(piece, "Q" * len(piece))
    own_words = " ".join(_messages(blanked))
    for text in _messages(line):
        no_secret(text, tuple(p for p in pieces if p not in own_words))


def _messages(line: str) -> list[str]:
    """The error message or the warnings of parsing ``line``."""
    result = clean(lambda: parse(line))
    return [str(result)] if isinstance(result, IscsibootError) else [str(w) for w in result.warnings]


# ---------------------------------------------------------------- root paths and ip=


@budget(300)
@given(
    st.one_of(
        st.text(max_size=80).map(lambda s: "iscsi:" + s), st.sampled_from(ROOT_PATHS).flatmap(text_mutants)
    )
)
def test_root_paths(text: str) -> None:
    result = clean(lambda: parse_root_path(text, where="root="))
    assert isinstance(result, IscsibootError) or result.name


@budget(300)
@given(st.one_of(st.text(max_size=80), st.sampled_from(IP_VALUES).flatmap(text_mutants)))
def test_ip_values(text: str) -> None:
    clean(lambda: parse_ip(text))
