"""Secrets never print; failures of subprocesses mask them."""

from __future__ import annotations

import sys

import pytest
from iscsiboot.errors import CommandError
from iscsiboot.proc import run
from iscsiboot.secret import MASK, Secret, mask


def test_secret_never_prints() -> None:
    s = Secret("hunter2hunter2")
    logged = "%s" % s  # noqa: UP031  (logging formats this way)
    for shown in (str(s), repr(s), f"{s}", f"{s!r}", logged, str([s]), str({"p": s})):
        assert "hunter2" not in shown
    assert s.reveal() == "hunter2hunter2"
    assert s.shown(False) == MASK and s.shown(True) == "hunter2hunter2"
    assert s == Secret("hunter2hunter2") and s != Secret("other")
    with pytest.raises(AttributeError):
        s._value = "x"  # type: ignore[misc]


def test_mask_longest_first() -> None:
    assert mask("pw=abcabc and abc", [Secret("abc"), "abcabc", None]) == "pw=*** and ***"


def test_failed_command_masks_secrets() -> None:
    secret = Secret("s3cr3t-passw0rd")
    code = "import sys; sys.stderr.write('login failed for ' + sys.argv[1]); sys.exit(3)"
    with pytest.raises(CommandError) as info:
        run([sys.executable, "-c", code, secret.reveal()], what="log in", secrets=[secret])
    text = str(info.value)
    assert "s3cr3t-passw0rd" not in text
    assert "exited 3" in text and "login failed for ***" in text
