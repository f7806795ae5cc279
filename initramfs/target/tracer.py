"""Import the agent's modules and print, as JSON, every file that got loaded.

Run by the builder as ``python3.11 -S -P tracer.py SPEC`` with the staged
package and the libraries on ``PYTHONPATH``.  ``SPEC`` is a JSON object:
``modules`` (names to import), ``prelude`` ((module, function) pairs called
first, as the agent does at boot), ``codecache`` (the module whose ``record()``
starts recording the generated code of every dataclass, compiled by this, the
image's, interpreter; its ``dump()`` goes to the file ``out``).  Output:
``{"files": {module: file}, "failed": {module: error}, "version": [major, minor, micro]}``.

Whatever this script imports, the trace records as part of the image: it
imports only importlib, json and sys, which the agent needs anyway.
"""

import importlib
import json
import sys


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    codecache: str = spec["codecache"]
    failed: dict[str, str] = {}
    recorder = None
    try:
        recorder = importlib.import_module(codecache).record()
    except Exception as exc:
        failed[codecache] = _error(exc)
    for prelude, func in spec["prelude"]:
        try:
            getattr(importlib.import_module(prelude), func)()
        except Exception as exc:
            failed[prelude] = _error(exc)
    for name in spec["modules"]:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed[name] = _error(exc)
    count = 0
    while count != len(sys.modules):  # touching a lazily loaded module runs it, and its imports join in
        count = len(sys.modules)
        for mod in list(sys.modules.values()):
            getattr(mod, "__spec__", None)
    files: dict[str, str] = {}
    for name, mod in sorted(sys.modules.items()):
        if name == "__main__":
            continue  # this script
        if getattr(getattr(mod, "__spec__", None), "origin", None) == "frozen" and name != "os":
            continue  # inside the interpreter (codecs, importlib.util, ...); os.pyc stays: stdlib's landmark
        path = getattr(mod, "__file__", None)
        if isinstance(path, str):
            files[name] = path
    if recorder is not None:
        with open(spec["out"], "wb") as out:
            out.write(recorder.dump())
    print(json.dumps({"files": files, "failed": failed, "version": list(sys.version_info[:3])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
