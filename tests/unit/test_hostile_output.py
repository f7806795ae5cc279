"""Input that used to end in a traceback, and names that used to reach the terminal raw.

Every case is one line on stderr and exit 2; names from a hostile target or
a crafted iBFT are printed escaped, one line each; a SendTargets answer
cannot make the initiator hold more than its cap.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from doctor_support import run_main
from ibft_support import NOCHAP
from iscsiboot.files import size_text
from iscsiboot.ibft.build import build_table
from iscsiboot.ibft.parse import parse_table
from iscsiboot.iscsi.pdu import RESERVED_TAG, Op, Pdu, ProtocolError, make_bhs
from iscsiboot.iscsi.session import MAX_SEND_TARGETS, MAX_TEXT_RESPONSES
from iscsiboot.iscsi.text import decode_keys, encode_keys
from iscsiboot.output import printable
from peer_support import PeerSocket

INITIATOR = "iqn.2003-01.org.example:box"
TARGET = [
    "--initiator",
    INITIATOR,
    "--target-name",
    "iqn.2003-01.org.example:disk",
    "--target-ip",
    "10.0.0.9",
]
HOSTILE = "iqn.2003-01.org.example:evil\x1b]0;owned\x07\x1b[2J\nfake line\r\u2028\u202e"


def child(
    *args: str | bytes, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "iscsiboot", *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode()
    )


def one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def clean(text: str) -> None:
    """No character that acts on a terminal: only printable ones and the newlines between lines."""
    assert all(ch.isprintable() or ch == "\n" for ch in text), text
    assert "\x1b" not in text and "\r" not in text


# ---------------------------------------------------------------- printable


def test_printable_escapes_controls_separators_and_undecodable_bytes() -> None:
    assert printable("plain iqn.2003-01.org:x é") == "plain iqn.2003-01.org:x é"
    assert printable("a\x1b[2Jb\nc\r\t") == "a\\x1b[2Jb\\x0ac\\x0d\\x09"
    assert printable("\u2028\u2029\u202e\x85\x00\U000e0001") == "\\u2028\\u2029\\u202e\\x85\\x00\\U000e0001"
    assert printable(b"iqn:\xff\xfe".decode("utf-8", "surrogateescape")) == "iqn:\\xff\\xfe"
    assert printable("two\nlines\x1b", keep="\n") == "two\nlines\\x1b"


# ---------------------------------------------------------------- tracebacks that are one line now


@pytest.mark.parametrize("value", ["nan", "inf", "1e308", "0", "-1", "90000", "\u0661", "ten"])
@pytest.mark.parametrize("command", [["discover", "--portal", "127.0.0.1:9"], ["doctor", "--cmdline", "x"]])
def test_timeout_must_be_a_finite_positive_number(command: list[str], value: str) -> None:
    err = one_line(child(*command, f"--timeout={value}"))
    assert "--timeout" in err and "at most 86400" in err


@pytest.mark.parametrize("command", [["generate", "cmdline"], ["ibft", "build", "-o", "t.bin"]])
@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "too deeply"),
        (b'{"targets": [{"port": ' + b"9" * 5000 + b"}]}", "thousands of digits"),
        (b'{"firmware": "caf\xe9"}', "byte 0xe9 at offset 17 is not UTF-8"),
        ('{"x": 1}'.encode("utf-16"), "byte 0xff at offset 0 is not UTF-8"),
    ],
    ids=["deep", "digits", "latin-1", "utf-16"],
)
def test_from_json_that_is_no_model_is_one_line(
    command: list[str], content: bytes, needle: str, tmp_path: Path
) -> None:
    path = tmp_path / "model.json"
    path.write_bytes(content)
    err = one_line(child(*command, "--from-json", str(path), cwd=tmp_path))
    assert f"--from-json {path}: " in err and needle in err
    assert not (tmp_path / "t.bin").exists()


def test_a_name_that_was_not_utf8_is_one_line_when_written(tmp_path: Path) -> None:
    name = b"iqn.2003-01.org.example:\xff"
    args: list[str | bytes] = [*TARGET[:4], "--target-name", name, "--target-ip", "10.0.0.9"]
    outs: tuple[tuple[str, list[str | bytes]], ...] = (
        ("cmdline", []),
        ("extlinux", ["-o", b"out"]),
        ("ipxe", ["-o", b"out"]),
    )
    for kind, out in outs:
        one_line(child("generate", kind, *args, *out, env={"PYTHONIOENCODING": "utf-8:strict"}, cwd=tmp_path))
    assert not (tmp_path / "out").exists()


def test_text_that_cannot_be_encoded_is_one_line_wherever_it_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def parse(_text: str) -> None:
        raise UnicodeEncodeError("utf-8", "secret-free text \udcff\udcfe", 17, 19, "surrogates not allowed")

    monkeypatch.setattr("iscsiboot.cmdline.cli.parse", parse)
    code, out, err = run_main(capsys, "cmdline", "parse", "x")
    assert code == 2 and out == "" and err.count("\n") == 1
    expected = (
        "a value holds \\xff\\xfe, which cannot be written as utf-8 (give names and values as UTF-8 text)"
    )
    assert err == f"iscsiboot: error: {expected}\n"
    assert "secret-free" not in err  # only the characters: the text around them may hold a secret


def test_a_name_that_was_not_utf8_is_one_escaped_line_and_exit_2_under_a_strict_locale() -> None:
    env = {"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    err = one_line(
        child("cmdline", "parse", b"root=iscsi:10.0.0.9::::iqn.2003-01.org.example:\xff\x1b[31m", env=env)
    )
    assert "not UTF-8 text (byte 0xff)" in err and "iqn.2003-01.org.example:\\xff\\x1b[31m" in err
    clean(err)
    err = one_line(child("cmdline", "parse", "--file", b"/nonexistent/\xff\x1b[2J", env=env))
    assert "/nonexistent/\\xff\\x1b[2J" in err
    clean(err)


# ---------------------------------------------------------------- a crafted iBFT


def test_ibft_show_escapes_the_strings_of_a_crafted_table(tmp_path: Path) -> None:
    table = parse_table(NOCHAP.read_bytes()).table
    targets = tuple(replace(t, name=HOSTILE) for t in table.targets)
    path = tmp_path / "evil.bin"
    path.write_bytes(build_table(replace(table, targets=targets)))
    for mode in ([], ["--sysfs"], ["--model"]):
        result = child("ibft", "show", str(path), *mode)
        assert result.returncode == 0, result.stderr
        clean(result.stdout)
        clean(result.stderr)
        assert "fake line" in result.stdout
        assert not any(line.startswith("fake line") for line in result.stdout.splitlines())
    parsed = json.loads(child("ibft", "show", "--json", str(path)).stdout)
    assert parsed["table"]["targets"][0]["name"] == HOSTILE  # JSON keeps the value, escaped by JSON


# ---------------------------------------------------------------- a hostile target


Script = Callable[["Peer"], None]


class Peer(PeerSocket):
    """The target's side of one connection: read an initiator's PDUs, answer with StatSN in order."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, stat_sn=7)

    def answer(
        self, request: Pdu, op: int, *, flags: int, data: bytes = b"", ttt: int = RESERVED_TAG
    ) -> None:
        bhs = make_bhs(op, flags=flags)
        if op == Op.LOGIN_RESPONSE:
            bhs[8:14] = request.bhs[8:14]  # ISID
            struct.pack_into(">H", bhs, 14, 0x100)  # TSIH
        struct.pack_into(">II", bhs, 16, request.itt, ttt)
        struct.pack_into(">III", bhs, 24, self.stat_sn, request.u32(24) + 1, request.u32(24) + 32)
        self.stat_sn += 1
        self.send(Pdu(bytes(bhs), b"", data))

    def login(self) -> None:
        """A discovery login without authentication, answered in whatever stages the initiator asks."""
        while True:
            request = self.recv()
            assert request.opcode == Op.LOGIN_REQUEST
            keys = dict(decode_keys(request.data))
            answer = [("AuthMethod", "None")] if "AuthMethod" in keys else []
            if "MaxRecvDataSegmentLength" in keys:
                answer.append(("MaxRecvDataSegmentLength", "8192"))
            self.answer(request, Op.LOGIN_RESPONSE, flags=request.flags & 0x8F, data=encode_keys(answer))
            if request.flags & 0x80 and request.flags & 0x03 == 3:  # T to full feature phase
                return

    def logout(self) -> None:
        with_logout = self.recv()
        assert with_logout.opcode == Op.LOGOUT_REQUEST
        self.answer(with_logout, Op.LOGOUT_RESPONSE, flags=0x80)


@pytest.fixture
def portal() -> Iterator[Callable[[Script], str]]:
    """A one-connection target on 127.0.0.1 that runs a script; yields a starter giving HOST:PORT."""
    server = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []

    def start(script: Script) -> str:
        def body() -> None:
            try:
                conn, _ = server.accept()
                with conn:
                    script(Peer(conn))
            except BaseException as exc:  # reported after the test
                errors.append(exc)

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        threads.append(thread)
        host, port = server.getsockname()[:2]
        return f"{host}:{port}"

    yield start
    for thread in threads:
        thread.join(10)
    server.close()
    if errors and not isinstance(errors[0], (EOFError, ConnectionError)):
        raise errors[0]


def _send_targets(answers: list[tuple[bytes, bool]]) -> Script:
    """A target that answers SendTargets with these (data, more to come) Text Responses."""

    def script(peer: Peer) -> None:
        peer.login()
        for data, more in answers:
            request = peer.recv()
            assert request.opcode == Op.TEXT_REQUEST
            peer.answer(
                request,
                Op.TEXT_RESPONSE,
                flags=0x40 if more else 0x80,
                data=data,
                ttt=0x55 if more else RESERVED_TAG,
            )
        peer.logout()

    return script


def test_discover_prints_a_hostile_target_name_escaped(
    portal: Callable[[Script], str], capsys: pytest.CaptureFixture[str]
) -> None:
    listing = encode_keys([("TargetName", HOSTILE), ("TargetAddress", "10.0.0.9:3260,1\x1b[1m")])
    address = portal(_send_targets([(listing, False)]))
    code, out, err = run_main(capsys, "discover", "--portal", address, "--timeout", "5")
    assert code == 0, err
    clean(out)
    assert out.count("\n") == 1 and out.startswith(
        "10.0.0.9:3260,1\\x1b[1m iqn.2003-01.org.example:evil\\x1b]"
    )
    assert "\\x0afake line\\x0d\\u2028\\u202e" in out


def test_discover_refuses_a_send_targets_answer_over_its_cap(
    portal: Callable[[Script], str], capsys: pytest.CaptureFixture[str]
) -> None:
    chunk = encode_keys([("TargetName", "iqn.2003-01.org.example:" + "x" * 200)]) * 2600  # ~590 KB
    address = portal(_send_targets([(chunk, True), (chunk, True), (chunk, False)]))
    code, _out, err = run_main(capsys, "discover", "--portal", address, "--timeout", "5")
    assert code == 1 and err.count("\n") == 1, err
    assert f"longer than {size_text(MAX_SEND_TARGETS)}" in err and "1 MiB" in err


def test_discover_refuses_an_answer_that_never_ends(
    portal: Callable[[Script], str], capsys: pytest.CaptureFixture[str]
) -> None:
    small = encode_keys([("TargetName", "iqn.2003-01.org.example:a")])
    address = portal(_send_targets([(small, True)] * (MAX_TEXT_RESPONSES + 1)))
    code, _out, err = run_main(capsys, "discover", "--portal", address, "--timeout", "5")
    assert code == 1 and f"did not end within {MAX_TEXT_RESPONSES} responses" in err, err
    assert ProtocolError.__name__ not in err
