"""Secrets never print; failures of subprocesses mask them."""

from __future__ import annotations

import sys

import pytest
from iscsiboot.errors import CommandError
from iscsiboot.proc import run
from iscsiboot.secret import MASK, Secret, mask, mask_argv


def test_secret_never_prints() -> None:
    s = Secret("hunter2hunter2")
    logged = "%s" % s  # noqa: UP031  (logging formats this way)
    for shown in (str(s), repr(s), f"{s}", f"{s!r}", logged, str([s]), str({"p": s})):
        assert "hunter2" not in shown
    assert s.reveal() == "hunter2hunter2"
    assert s.shown(False) == MASK and s.shown(True) == "hunter2hunter2"
    assert s == Secret("hunter2hunter2") and s != Secret("other")
    with pytest.raises(AttributeError):
        s._value = "x"


def test_mask_longest_first() -> None:
    long = "abcdefgh-ijkl"
    text = f"pw {long}-mn and {long}"
    assert mask(text, [Secret(long), f"{long}-mn", None]) == "pw *** and ***"


def test_mask_replaces_whole_tokens_only() -> None:
    # A secret that is also a port number does not mark the port as secret.
    assert mask("iscsi_target_port=3260", [Secret("3260")]) == "iscsi_target_port=3260"
    # A one-letter secret does not cut words apart.
    assert mask("duplicate key", [Secret("e")]) == "duplicate key"
    assert mask("login failed for x-s3cr3t-passw0rd", [Secret("s3cr3t-passw0rd")]) == (
        "login failed for x-s3cr3t-passw0rd"
    )
    assert mask("login failed for s3cr3t-passw0rd.", [Secret("s3cr3t-passw0rd")]) == "login failed for ***."


def test_mask_short_secret_only_after_a_secret_key() -> None:
    secret = Secret("3260")
    text = "iscsi_target_port=3260 iscsi_password=3260 node.session.auth.password = 3260"
    shown = "iscsi_target_port=3260 iscsi_password=*** node.session.auth.password = ***"
    assert mask(text, [secret]) == shown
    assert mask("bad password 'e'", [Secret("e")]) == "bad password '***'"


def test_mask_argv_by_argument() -> None:
    assert mask_argv(["iscsistart", "-P", "e", "-t", "e.iqn"], [Secret("e")]) == [
        "iscsistart",
        "-P",
        "***",
        "-t",
        "e.iqn",
    ]


def test_failed_command_masks_secrets() -> None:
    secret = Secret("s3cr3t-passw0rd")
    code = "import sys; sys.stderr.write('login failed for ' + sys.argv[1]); sys.exit(3)"
    with pytest.raises(CommandError) as info:
        run([sys.executable, "-c", code, secret.reveal()], what="log in", secrets=[secret])
    text = str(info.value)
    assert "s3cr3t-passw0rd" not in text
    assert "exited 3" in text and "login failed for ***" in text
