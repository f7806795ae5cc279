"""The C CRC32C (the ``crc32c`` package, where installed) and the pure one agree."""

from __future__ import annotations

import random

import pytest
from iscsiboot.iscsi.pdu import crc32c, crc32c_pure


def test_pure_crc32c_vectors() -> None:
    assert crc32c_pure(b"123456789") == 0xE3069283
    assert crc32c_pure(b"456", crc32c_pure(b"123")) == crc32c_pure(b"123456")


def test_the_c_implementation_agrees_with_the_pure_one() -> None:
    pytest.importorskip("crc32c")
    rng = random.Random(7)
    for size in (0, 1, 3, 48, 4096, 65537):
        data = rng.randbytes(size)
        start = rng.getrandbits(32)
        assert crc32c(data, start) == crc32c_pure(data, start)
        assert crc32c(memoryview(bytearray(data))) == crc32c_pure(data)
