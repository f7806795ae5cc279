"""Every command that README.md shows runs as written.

The ``sh`` blocks of the README are read line by line (continuations joined,
trailing comments dropped).  Each command must be known here, so a new README
command without a check fails this test.  The tour's commands run for real, in
order, in an empty folder, with one placeholder filled: the README's NAS address
becomes 127.0.0.1, so that the doctor talks to loopback only.  The heavy
commands are checked where they run: ``./run test`` is this suite (``.ci/run``
calls exactly it), ``./run demo`` is ``iscsiboot qemu demo``, which the VM tier
boots, and the benchmark's options are parsed by the benchmark's own parser.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent
NAS_PLACEHOLDER = "192.168.1.14"  # the README's NAS; the test's is loopback


def readme_commands(text: str) -> list[str]:
    """The commands of the ``sh`` blocks, continuations joined, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        pending = ""
        for raw in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", raw).rstrip()
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            command = (pending + line.strip()).strip()
            pending = ""
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


COMMANDS = readme_commands(README.read_text())
SPECIAL = {"./run demo", "./run test"}


def _tour() -> list[str]:
    return [c for c in COMMANDS if c.startswith("iscsiboot ")]


BENCHMARK = re.compile(r"(?:^|\s)(benchmarks/[a-z_]+\.py)(?:\s|$)")


def _benchmarks() -> list[str]:
    return [c for c in COMMANDS if BENCHMARK.search(c)]


def test_every_readme_command_is_checked() -> None:
    unchecked = [c for c in COMMANDS if c not in SPECIAL and c not in _tour() and c not in _benchmarks()]
    assert not unchecked, f"README commands that no test runs: {unchecked}"
    assert set(COMMANDS) >= SPECIAL
    assert len(_tour()) >= 5


def test_the_test_command_is_what_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^exec \./run test$", ci, flags=re.M), ci
    usage = subprocess.run([str(REPO / "run")], capture_output=True, text=True, timeout=30, check=False)
    assert usage.returncode == 2 and "./run demo | ./run test" in usage.stderr


def test_run_demo_is_the_qemu_demo_the_vm_tier_boots() -> None:
    run_script = (REPO / "run").read_text()
    assert re.search(r"demo\)\n.*?exec \.venv/bin/iscsiboot qemu demo \"\$@\"", run_script, flags=re.S)
    vm = (REPO / "tests").rglob("test_vm.py")
    assert any('"demo"' in p.read_text() for p in vm), "no VM test runs 'iscsiboot qemu demo'"


def test_tour_runs_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in _tour():
        filled = command.replace(NAS_PLACEHOLDER, "127.0.0.1")
        done = subprocess.run(
            ["bash", "-c", filled],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # 0 ok, 1 a finding (no iBFT on this machine, nothing listening): never a usage error
        assert done.returncode in (0, 1), f"{command}: exit {done.returncode}: {done.stderr}"
        assert "Traceback" not in done.stderr, f"{command}: {done.stderr}"
        if done.returncode == 1:
            errors = [line for line in done.stderr.splitlines() if line.startswith("iscsiboot: error")]
            assert len(errors) <= 1, f"{command}: {done.stderr}"
        if command.startswith("iscsiboot cmdline parse '"):
            assert "LABEL=Storage" in done.stdout, done.stdout
        if command.startswith("iscsiboot doctor"):
            assert "127.0.0.1:3260" in done.stdout, done.stdout  # it read the file the tour wrote
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written, "the tour writes the files the later commands read"


def test_benchmark_commands_parse() -> None:
    """Each benchmark the README shows takes its options (its own parser), for medians of several runs."""
    commands = _benchmarks()
    assert any("benchmarks/boot.py" in c for c in commands)
    for command in commands:
        found = BENCHMARK.search(command)
        assert found is not None
        script = found.group(1)
        name = f"readme_{Path(script).stem}_benchmark"
        spec = importlib.util.spec_from_file_location(name, REPO / script)
        assert spec is not None and spec.loader is not None, script
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        try:
            spec.loader.exec_module(module)
        finally:
            del sys.modules[spec.name]
        argv = command.split()
        parsed = module.build_parser().parse_args(argv[argv.index(script) + 1 :])
        assert parsed.runs >= (5 if script.endswith("boot.py") else 3), command


INLINE_RUNS = re.findall(r"`(\./run [^`]+)`", README.read_text())


def test_inline_run_commands_name_what_exists() -> None:
    """``./run test -m "not vm"``, ``./run test tests/unit/...`` in the prose: marker and path exist."""
    pytest_config = (REPO / "pyproject.toml").read_text()
    extra = [c for c in INLINE_RUNS if c not in SPECIAL]
    assert extra, "the README shows how extra arguments reach pytest"
    for command in extra:
        assert command.startswith("./run test "), command
        for marker in re.findall(r'-m "not (\w+)"', command):
            assert f'"{marker}:' in pytest_config, f"{command}: no marker {marker}"
        for path in re.findall(r"\btests/\S+", command):
            assert (REPO / path).exists(), f"{command}: {path} does not exist"


@pytest.mark.parametrize("command", sorted(SPECIAL))
def test_special_commands_are_in_the_readme(command: str) -> None:
    assert command in COMMANDS
