"""Properties: generate then parse gives the model back; the parser raises only ParseError."""

from __future__ import annotations

from cmdline_support import cmdline_models, dracut_models, targets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iscsiboot.cmdline import generate
from iscsiboot.cmdline.parse import parse, tokenize
from iscsiboot.errors import ParseError
from iscsiboot.model import BootConfig, Target

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(cmdline_models())
def test_cmdline_form_round_trips(model: BootConfig) -> None:
    text = generate.cmdline(model).text
    assert parse(text).config == model, text


@SETTINGS
@given(cmdline_models(), st.booleans())
def test_extlinux_append_round_trips(model: BootConfig, serial: bool) -> None:
    text = generate.extlinux(model, serial=serial).text
    (append,) = [line for line in text.splitlines() if line.startswith("  APPEND ")]
    assert parse(append.removeprefix("  APPEND ")).config == model


@SETTINGS
@given(targets(lun=True), st.sampled_from(["root", "netroot"]))
def test_rfc4173_root_path_round_trips(target: Target, param: str) -> None:
    text = generate.root_path(target, credentials=True).text
    parsed = parse(f"{param}={text}").config
    expected = Target(
        target.name, target.address, target.port, 1, target.lun, target.chap, target.reverse_chap
    )
    assert parsed.targets == (expected,), text


@SETTINGS
@given(targets(lun=True))
def test_root_path_without_credentials_has_no_secret(target: Target) -> None:
    result = generate.root_path(target)
    assert result.secrets == ()
    back = parse(f"netroot={result.text}").config.targets[0]
    assert (back.name, back.address, back.port, back.lun, back.chap) == (
        target.name,
        target.address,
        target.port,
        target.lun,
        None,
    )


@SETTINGS
@given(dracut_models())
def test_dracut_form_round_trips(model: BootConfig) -> None:
    text = generate.dracut(model).text
    assert parse(text).config == model, text


# Token-shaped text: the prefixes the parser reacts to, then noise made of its separators.
_PREFIXES = st.sampled_from(
    [
        "boot=ISCSI=",
        "disk=ISCSI=",
        "boot=",
        "disk=",
        "ip=",
        "root=iscsi:",
        "netroot=iscsi:",
        "root=",
        "iscsi_target_group=",
        "iscsi_target_port=",
        "iscsi_target_ip=",
        "iscsi_target_name=",
        "iscsi_password=",
        "iscsi_in_username=",
        "iscsi_auto",
        "rd.iscsi.",
        "rd.iscsi.firmware=",
        "rd.iscsi.target.group=",
        "rd.iscsi.username=",
        "BOOTIF=01-",
        "nameserver=",
        "vlan=",
        "LABEL=",
        "--",
        '"',
        "",
    ]
)
_NOISE = st.text(alphabet=',:=@[]"- .0123456789abcdefLABEUIDiscsi_tgrpnmol/\u00b2\u0660', max_size=40)
_TOKENS = st.lists(st.tuples(_PREFIXES, _NOISE).map("".join), max_size=8).map(" ".join)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(), _TOKENS))
def test_parser_raises_only_parse_error(text: str) -> None:
    try:
        parse(text)
    except ParseError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_tokenize_never_keeps_quotes_or_whitespace_outside_quotes(text: str) -> None:
    for token in tokenize(text):
        assert '"' not in token
        assert token != "--"


_SECRETS = st.text("0123456789ABCDEFGHJKMNPRTVWY", min_size=4, max_size=10).map(lambda s: "ZQX" + s)
_SECRET_FORMS = st.sampled_from(
    [
        "iscsi_password={s}",
        "iscsi_in_password={s}{n}",
        "rd.iscsi.password={s}",
        "rd.iscsi.in.password={s}{n}",
        "boot=ISCSI=iscsi_password={s}{n}",
        "disk=ISCSI={n},iscsi_in_password={s}{n}",
        "root=iscsi:u:{s}@{n}",
        "netroot=iscsi:u:{s}:r:{s}@{n}",
        "root=iscsi:u:{s}{n}@{n}",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(_TOKENS, _SECRET_FORMS, _SECRETS, _NOISE.map(lambda n: n.replace(" ", "").replace('"', "")), _TOKENS)
def test_errors_and_warnings_never_show_a_secret(
    before: str, form: str, secret: str, noise: str, after: str
) -> None:
    # the secret-bearing token stays one token (no white space or quotes in its noise)
    text = f"{before} {form.format(s=secret, n=noise)} {after}"
    try:
        parsed = parse(text)
    except ParseError as exc:
        assert "ZQX" not in str(exc), str(exc)
    else:
        assert not any("ZQX" in w for w in parsed.warnings)
