"""The undo stack of install: a signal is held back outside the interruptible work, undo steps always run."""

from __future__ import annotations

import functools
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from iscsiboot.disk.layout import SIZE_MAX, parse_size
from iscsiboot.disk.undo import Undo
from iscsiboot.errors import UsageError


def _signal(signum: int = signal.SIGINT) -> None:
    os.kill(os.getpid(), signum)


def _record(done: list[str], name: str) -> Callable[[], bool]:
    """An undo step that notes its name in ``done`` and succeeds."""

    def step() -> bool:
        done.append(name)
        return True

    return step


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_setup_waits_for_the_next_interruptible_point(signum: int) -> None:
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), Undo() as undo:
        _signal(signum)  # between a setup step's effect and its registration
        undo.push("undo one", _record(done, "one"))
        done.append("registered")
        with undo.interruptible():
            done.append("never")
    assert done == ["registered", "one"]


def test_an_interruptible_section_stops_at_once_and_everything_is_undone() -> None:
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), Undo() as undo:
        undo.push("first", _record(done, "first"))
        with undo.scope():
            undo.push("second", _record(done, "second"))
            with undo.interruptible():
                _signal()
                done.append("never")
    assert done == ["second", "first"]


def test_the_clean_up_is_not_cut_short_by_more_signals() -> None:
    done: list[str] = []

    def noisy(name: str) -> bool:
        _signal(signal.SIGTERM)
        done.append(name)
        return True

    with pytest.raises(KeyboardInterrupt), Undo() as undo:
        for name in ("a", "b", "c"):
            undo.push(name, functools.partial(noisy, name))
        with undo.interruptible():
            _signal()
    assert done == ["c", "b", "a"]


def test_kept_steps_stay_on_success_and_go_on_failure() -> None:
    done: list[str] = []
    with Undo() as undo:
        undo.keep(undo.push("remove the image", _record(done, "removed")))
    assert done == []
    with pytest.raises(RuntimeError), Undo() as undo:
        undo.keep(undo.push("remove the image", _record(done, "removed")))
        raise RuntimeError("failed")
    assert done == ["removed"]


def test_a_signal_after_the_last_interruptible_point_still_undoes_the_kept_steps() -> None:
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), Undo() as undo:
        undo.keep(undo.push("remove the image", _record(done, "removed")))
        with undo.interruptible():
            pass
        _signal()
    assert done == ["removed"]


def test_a_failed_step_keeps_what_depends_on_it_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    done: list[str] = []

    def broken() -> bool:
        raise OSError("busy")

    with pytest.raises(RuntimeError), Undo() as undo:
        undo.push("remove the image", _record(done, "removed"), only_if_clean=True)
        undo.push("unmount", broken)
        raise RuntimeError("failed")
    assert done == []
    err = capsys.readouterr().err
    assert "cannot unmount: busy" in err and "did not remove the image" in err


def test_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with Undo():
        assert signal.getsignal(signal.SIGINT) != before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


_MKDTEMP = tempfile.mkdtemp


def _signalling_mkdtemp(made: list[Path]) -> Callable[..., str]:
    """``tempfile.mkdtemp`` with a SIGINT right after the folder exists (before anything registers it)."""

    def mkdtemp(*args: object, **kwargs: object) -> str:
        path = _MKDTEMP(*args, **kwargs)  # type: ignore[call-overload]
        made.append(Path(path))
        _signal()
        return str(path)

    return mkdtemp


def test_a_folder_made_in_an_interruptible_section_is_removed_when_a_signal_follows_its_making(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Path] = []
    monkeypatch.setattr("iscsiboot.disk.undo.tempfile.mkdtemp", _signalling_mkdtemp(made))
    with pytest.raises(KeyboardInterrupt), Undo() as undo, undo.interruptible():
        undo.folder("work-", parent=tmp_path)
        pytest.fail("the signal stops the section once the folder's removal is registered")
    assert len(made) == 1
    assert list(tmp_path.iterdir()) == []


def test_negative_control_a_folder_registered_after_its_making_stays_when_a_signal_comes_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Path] = []
    monkeypatch.setattr("iscsiboot.disk.undo.tempfile.mkdtemp", _signalling_mkdtemp(made))
    with pytest.raises(KeyboardInterrupt), Undo() as undo, undo.interruptible():
        folder = Path(tempfile.mkdtemp(prefix="work-", dir=tmp_path))
        undo.push(f"remove {folder}", _record([], "never reached"))
    assert list(tmp_path.iterdir()) == made


def test_a_folder_and_all_it_holds_go_even_when_a_signal_comes_during_the_clean_up(tmp_path: Path) -> None:
    def noisy() -> bool:
        _signal()  # the work is done: the signal is raised again once all is undone
        return True

    with pytest.raises(KeyboardInterrupt), Undo() as undo:
        work = undo.folder("work-", parent=tmp_path)
        (work / "deep").mkdir()
        (work / "deep" / "file").write_bytes(b"x" * 4096)
        undo.push("signal", noisy)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text", ["1" * 400, "99999999999999999999T", "8388608T", "inf", "nan", "1e9", "\u0661G", "-1M", "0"]
)
def test_sizes_beyond_any_disk_or_not_numbers_are_one_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text, what="--size")


def test_sizes_are_exact() -> None:
    assert parse_size("1.5G") == 3 << 29
    assert parse_size("8388607T") == 8388607 << 40 <= SIZE_MAX
    assert parse_size("0.001K") == 1
