"""The generators on arbitrary model values, hostile text included.

Each format either refuses the model with one of the project's own one-line
errors, or writes a file that its consumer reads back as meant: the kernel
command line through the project's parser, extlinux.conf through the
project's extlinux reader, iPXE scripts through the reader that follows
iPXE's tokenisation, dnsmasq configurations through ``dnsmasq --test``.  No
message and no secret-free format shows a CHAP secret, and every secret a
text holds is listed for masking.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iscsiboot.cmdline import generate
from iscsiboot.cmdline.ipxescript import Command, expands, read_script
from iscsiboot.cmdline.parse import parse
from iscsiboot.cmdline.syntax import bad_char
from iscsiboot.disk.inspect import parse_extlinux
from iscsiboot.errors import IscsibootError
from iscsiboot.model import BootConfig, Chap, Locator, NetMode, Network, Target
from iscsiboot.secret import Secret

BUDGET = settings(
    max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
MARK = "ZQX"  # every secret starts with it, and no other value holds a 'Z'
_SPECIAL = [
    *"#$;{}|&\\\"', :@%?=\n\r\f\v\t\0\x1b\x7f\x85\xa0\u00e0\u2028\u2029\ufeff",
    "${password}",
    "||",
    "&&",
]
_CHARS = st.one_of(st.sampled_from(_SPECIAL), st.characters(blacklist_characters="Z"))
hostile = st.lists(_CHARS, max_size=8).map("".join)
plain = st.text("abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=8)
words = st.one_of(plain, hostile, st.builds(lambda a, b: a + b, plain, hostile))
names = st.builds(lambda w: f"iqn.2024-01.lab:{w}", words)
secrets = st.builds(lambda w: Secret(MARK + w), words)
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def _try(make: Callable[..., object], *args: object) -> object | None:
    try:
        return make(*args)
    except IscsibootError:
        return None


@st.composite
def models(draw: st.DrawFn) -> BootConfig | None:
    def chap() -> Chap | None:
        return _try(Chap, draw(words), draw(secrets))  # type: ignore[return-value]

    targets = []
    for _ in range(draw(st.integers(1, 2))):
        one = chap() if draw(st.booleans()) else None
        two = chap() if one is not None and draw(st.booleans()) else None
        address = draw(st.sampled_from(["10.0.2.2", "fd00::2", "nas.lab", "fe80::1%eth0"]))
        target = _try(Target, draw(names), address, 3260, 1, draw(st.none() | st.just(1)), one, two)
        if target is None:
            return None
        targets.append(target)
    system = _try(Locator.parse, "LABEL=" + draw(words))
    storage = _try(Locator.parse, "LABEL=" + draw(words))
    network = _try(lambda d: Network(mode=NetMode.DHCP, device=d), draw(st.none() | words))
    return _try(  # type: ignore[return-value]
        BootConfig,
        False,
        draw(names),
        tuple(targets),
        network or Network(mode=NetMode.DHCP),
        system or Locator.parse("LABEL=System"),
        storage,
        len(targets) == 2,
    )


def _secret_texts(cfg: BootConfig) -> list[str]:
    return [s.reveal() for s in cfg.secrets()]


def _clean_error(exc: IscsibootError, cfg: BootConfig) -> None:
    message = str(exc)
    assert "\n" not in message and "\r" not in message
    assert MARK not in message, message


def _made(make: object, cfg: BootConfig) -> generate.Generated | None:
    try:
        result = make(cfg)  # type: ignore[operator]
    except IscsibootError as exc:
        _clean_error(exc, cfg)
        return None
    assert isinstance(result, generate.Generated)
    assert not any(MARK in w for w in result.warnings)
    for line in result.text.splitlines():
        assert bad_char(line) is None, repr(line)
    for secret in cfg.secrets():
        if secret.reveal() in result.text:
            assert secret in result.secrets
    return result


@BUDGET
@given(models())
def test_command_lines_read_back(cfg: BootConfig | None) -> None:
    if cfg is None:
        return
    for make in (generate.cmdline, generate.dracut):
        result = _made(make, cfg)
        if result is not None:
            assert "\n" not in result.text
            back = parse(result.text).config
            assert back.system == cfg.system
            assert {t.name for t in back.targets} <= {t.name for t in cfg.targets}
            assert back.secrets() == tuple(s for s in cfg.secrets() if s in back.secrets())


@BUDGET
@given(models(), st.lists(words, max_size=3), words)
def test_extlinux_reads_back_one_entry(cfg: BootConfig | None, extra: list[str], kernel: str) -> None:
    if cfg is None:
        return
    result = _made(lambda c: generate.extlinux(c, kernel="/" + kernel, append_extra=tuple(extra)), cfg)
    if result is None:
        return
    conf = parse_extlinux(result.text)
    assert [label.name for label in conf.labels] == ["linux"]
    entry = conf.entry()
    assert entry is not None and entry.kernel == "/" + kernel and entry.initrd is None
    line = generate.cmdline(cfg).text
    assert entry.append == " ".join([line, *extra]).strip()


@BUDGET
@given(models(), words, st.booleans())
def test_ipxe_reads_back_as_written(cfg: BootConfig | None, path: str, embedded: bool) -> None:
    if cfg is None:
        return
    result = _made(lambda c: generate.ipxe(c, embed_path="/tmp/" + path, embedded=embedded, attempts=2), cfg)
    if result is None:
        return
    script = read_script(result.text)
    assert not script.dangling
    expected_labels = ["sanboot_failed"] if not embedded else ["retry_dhcp", "sanboot_failed"]
    assert sorted(script.labels()) == sorted(expected_labels)
    commands = script.commands()
    assert {c.words[0] for c in commands} <= {"dhcp", "goto", "echo", "set", "sanhook", "sanboot", "exit"}
    assert not any(expands(w) for c in commands for w in c.words)
    assert all(
        not line.comment or line.commands == (Command(()),) or not line.commands[0].words
        for line in script.lines
    )
    sets = {c.words[1]: " ".join(c.words[2:]) for c in commands if c.words[0] == "set"}
    boot = cfg.targets[0]
    assert sets.get("initiator-iqn") == cfg.initiator
    if boot.chap is not None:
        assert (sets["username"], sets["password"]) == (boot.chap.username, boot.chap.password.reveal())
    if boot.reverse_chap is not None:
        pair = (sets["reverse-username"], sets["reverse-password"])
        assert pair == (boot.reverse_chap.username, boot.reverse_chap.password.reveal())
    uri = generate.root_path(boot).text
    assert [c.words for c in commands if c.words[0] == "sanboot"] == [("sanboot", uri)] * 2


@BUDGET
@given(models(), st.none() | words, st.none() | words)
def test_dnsmasq_files_pass_dnsmasq_test(
    cfg: BootConfig | None, interface: str | None, root: str | None
) -> None:
    if cfg is None:
        return
    if not Path(DNSMASQ).exists():
        pytest.skip("dnsmasq is not installed")
    result = _made(
        lambda c: generate.dnsmasq(c, interface=interface, tftp_root="/srv/" + (root or "tftp")), cfg
    )
    if result is None:
        return
    assert result.secrets == () and MARK not in result.text
    uri = generate.root_path(cfg).text
    assert f'dhcp-option=tag:!ipxe,option:root-path,"{uri}"' in result.text.splitlines()
    assert len(uri.encode()) <= generate.DHCP_OPTION_MAX
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "dnsmasq.conf"
        conf.write_text(result.text)
        done = subprocess.run(
            [DNSMASQ, "--test", "-C", str(conf)], capture_output=True, text=True, check=False
        )
    assert done.returncode == 0, (done.stderr, result.text)


@BUDGET
@given(models())
def test_root_paths_show_credentials_only_when_asked(cfg: BootConfig | None) -> None:
    if cfg is None:
        return
    result = _made(generate.root_path, cfg)
    if result is not None:
        assert MARK not in result.text and result.secrets == ()
    _made(lambda c: generate.root_path(c, credentials=True), cfg)
