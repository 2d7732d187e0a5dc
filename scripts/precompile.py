"""Write the bytecode a render reads, at both optimisation levels.

`cdk8s synth` runs `python -O main.py`, which reads `*.opt-1.pyc`; pip writes
only plain `*.pyc` into the venv. Where PYTHONDONTWRITEBYTECODE is set (CI
images, many containers, this project's sessions) Python never writes the
missing files, so every render compiled cdk8s, jsii, PyYAML and charts/ from
source again (~0.2 s of each synth). This renders every env once into a
scratch directory and compiles exactly the modules that render imported.

usage: .venv/bin/python scripts/precompile.py   (scripts/setup.sh runs it)
"""

from __future__ import annotations

import compileall
import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_by_render() -> list[Path]:
    sys.path.insert(0, str(ROOT))
    import main

    with (tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()),
          contextlib.redirect_stderr(io.StringIO())):
        # A profile error still leaves most modules imported; setup must not fail on it.
        main.main(["--out", out])
    venv = Path(sys.prefix).resolve()
    files = []
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if not source or not source.endswith(".py"):
            continue
        path = Path(source).resolve()
        if path.is_relative_to(ROOT) or path.is_relative_to(venv):
            files.append(path)
    return sorted(set(files))


def main() -> int:
    files = imported_by_render()
    failed = [path for path in files for level in (0, 1)
              if not compileall.compile_file(path, quiet=2, optimize=level)]
    if failed:
        print(f"precompile: could not compile {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
