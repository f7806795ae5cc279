"""iBFT tables (bytes in memory, in ACPI or in a memory dump) and the kernel's sysfs view of
one: a table or the project's TableError, never a CHAP secret in a message."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fuzz_support import budget, clean, edge_text, mutants, no_secret, text_mutants
from hypothesis import given
from hypothesis import strategies as st
from ibft_support import REVERSE_SECRET, SECRET, memory_image, sample_paths, sample_sysfs, vector_table
from iscsiboot.ibft.build import build_table
from iscsiboot.ibft.mapping import table_to_model
from iscsiboot.ibft.parse import parse_table
from iscsiboot.ibft.render import explain, table_to_dict
from iscsiboot.ibft.sources import read_sysfs_parsed, scan_memory
from iscsiboot.ibft.sysfs import to_sysfs
from iscsiboot.ibft.types import Parsed

SAMPLES = (*(p.read_bytes() for p in sample_paths()), build_table(vector_table()))
SYSFS = tuple(sample_sysfs(p) for p in sample_paths())
SECRETS = (SECRET, REVERSE_SECRET, "secret123456")


def _checked(data: bytes, lenient: bool) -> None:
    result = clean(lambda: parse_table(data, lenient=lenient), secrets=SECRETS)
    if not isinstance(result, Parsed):
        return
    for warning in result.warnings:
        no_secret(warning, SECRETS)
    table = result.table
    # what the commands do with a table they read: none of it may fail or show a secret
    no_secret(explain(table, warnings=result.warnings), SECRETS)
    no_secret(repr(table_to_dict(table)), SECRETS)
    no_secret(repr(to_sysfs(table)), SECRETS)
    clean(lambda: table_to_model(table), secrets=SECRETS)


def _with_checksum(data: bytes) -> bytes:
    """``data`` with a checksum that fits, so the parser looks past it."""
    raw = bytearray(data)
    if len(raw) < 10:
        return data
    raw[9] = 0
    raw[9] = (-sum(raw[: int.from_bytes(raw[4:8], "little")])) & 0xFF
    return bytes(raw)


@budget(300)
@given(st.binary(max_size=1200), st.booleans())
def test_arbitrary_bytes(data: bytes, lenient: bool) -> None:
    _checked(data, lenient)


@budget(300)
@given(st.sampled_from(SAMPLES).flatmap(lambda s: mutants(s, edits=10)), st.booleans(), st.booleans())
def test_mutated_tables(data: bytes, fix_checksum: bool, lenient: bool) -> None:
    _checked(_with_checksum(data) if fix_checksum else data, lenient)


@budget(150)
@given(
    st.sampled_from(SAMPLES).flatmap(lambda s: mutants(s, edits=3, window=64)),
    st.integers(0, 0x7FFF).map(lambda n: 0x80000 + 16 * n),
    st.booleans(),
)
def test_memory_scan(table: bytes, at: int, lenient: bool) -> None:
    """A table anywhere in the legacy window of a memory dump (also in the VGA hole, or past the end)."""
    base = 0x80000
    image = memory_image(_with_checksum(table), min(at, 0x100000 - 16), base=base, size=0x80000)
    clean(lambda: scan_memory(image, base, lenient=lenient), secrets=SECRETS)


# ---------------------------------------------------------------- the sysfs view

_BAD_BYTES = st.binary(min_size=1, max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape"))


@st.composite
def _sysfs_trees(draw: st.DrawFn) -> dict[str, str]:
    """A sample's attributes with some changed, removed or added."""
    tree = dict(draw(st.sampled_from(SYSFS)))
    keys = sorted(tree)
    for _ in range(draw(st.integers(1, 6))):
        key = draw(st.sampled_from(keys))
        kind = draw(st.integers(0, 4))
        if kind == 0:
            tree.pop(key, None)
        elif kind == 1:
            tree[key] = draw(text_mutants(tree.get(key, ""), edits=3))
        elif kind == 2:
            tree[key] = draw(edge_text | _BAD_BYTES)
        elif kind == 3:
            tree[key] = draw(
                st.sampled_from(("", "0", "255", "256", "-1", "999999", "0x10", "١", "::", "0.0.0.0"))
            )
        else:
            folder = key.split("/")[0].rstrip("0123456789")
            tree[f"{folder}{draw(st.sampled_from(('1', '7', '01', '99999999999')))}/{key.split('/')[1]}"] = (
                tree.get(key, "")
            )
    return tree


def _write_tree(root: Path, tree: dict[str, str]) -> None:
    for key, value in tree.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            raw = value.encode("utf-8", "surrogateescape")  # the bytes that did not decode
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogatepass")  # a lone surrogate, as bytes
        path.write_bytes(raw + b"\n")


@budget(80)
@given(_sysfs_trees(), st.booleans())
def test_sysfs_view(tree: dict[str, str], laid_out: bool) -> None:
    # the secrets' values, unless the same text stands elsewhere (another field, a file name)
    public = " ".join(
        [tempfile.gettempdir(), *tree, *(v for k, v in tree.items() if not k.endswith("secret"))]
    )
    secrets = tuple(
        v
        for k, v in tree.items()
        if k.endswith("secret") and len(v) >= 6 and v.isprintable() and v.strip() and v not in public
    )
    with tempfile.TemporaryDirectory(prefix="ibft-fuzz-") as folder:
        root = Path(folder)
        _write_tree(root, tree)
        result = clean(lambda: read_sysfs_parsed(root, laid_out=laid_out), secrets=secrets)
        if not isinstance(result, Parsed):
            return
        for warning in result.warnings:
            no_secret(warning, secrets)
        no_secret(explain(result.table, warnings=result.warnings), secrets)
        clean(lambda: table_to_model(result.table), secrets=secrets)
    assert not os.path.exists(folder)
