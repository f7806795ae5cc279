"""kmod's binary indexes read in place, checked against the text depmod writes beside them."""

from __future__ import annotations

import random
import re

from initramfs_support import test_kernel
from iscsiboot.agent.kmod import BinIndex, parse_index, read_index


def _instance(pattern: str, rng: random.Random) -> str:
    """A key the glob ``pattern`` matches: wildcards and character sets filled in."""
    filled = re.sub(
        r"\[!?([^]]*)\]", lambda m: m.group(1)[:1] if not m.group(0).startswith("[!") else "~", pattern
    )
    return "".join(rng.choice("0123456789ABCDEF") if c in "*?" else c for c in filled)


def test_trie_answers_as_the_text_on_debians_whole_index() -> None:
    """Sampled aliases of the kernel package find what the text finds; every module name its file."""
    moddir = test_kernel().modules
    text = parse_index(*((moddir / f"modules.{name}").read_text() for name in ("dep", "alias", "builtin")))
    binary = read_index(str(moddir))
    assert isinstance(binary, BinIndex)
    rng = random.Random(8)
    keys = [(pattern, module, _instance(pattern, rng)) for pattern, module in text.aliases]
    keys = [
        k
        for k in keys
        if k[2].replace("-", "_") not in text.paths and k[2].replace("-", "_") not in text.builtin
    ]
    assert len(keys) > 20_000
    for pattern, module, key in rng.sample(keys, 3000):  # an alias finds its module
        assert module in binary.lookup(key), (pattern, key)
    for pattern, _module, key in rng.sample(keys, 300):  # and nothing else than the text finds
        assert set(binary.lookup(key)) == set(text.lookup(key)), (pattern, key)
    for name, path in text.paths.items():
        assert (binary.path(name), binary.depends(name)) == (path, text.deps[name]), name
    assert binary.lookup("no-such-alias:v00") == [] and binary.path("no_such_module") is None
    assert binary.load_order("iscsi_tcp") == text.load_order("iscsi_tcp")
