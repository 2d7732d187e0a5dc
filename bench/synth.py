"""Rendering speed, measured on demand (never asserted in tests).

Runs, each in a fresh Python process so that nothing is warm:
  floor   `import cdk8s` and an empty App().synth(): jsii and Node start-up
  render  main.py rendering every env into a temp dir
and prints objects rendered, wall seconds, and what our code adds above the floor.
Targets (2-core machine): all envs <= 1.5 s; our code < 1 s above the floor.

usage: .venv/bin/python bench/synth.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "import cdk8s, tempfile; cdk8s.App(outdir=tempfile.mkdtemp()).synth()"


def timed(command: list[str]) -> tuple[float, str]:
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    floors, renders, objects = [], [], 0
    for _ in range(args.runs):
        floors.append(timed([sys.executable, "-c", FLOOR])[0])
        with tempfile.TemporaryDirectory() as out:
            # As `cdk8s synth` runs it (cdk8s.yaml): -O drops jsii's argument type checks.
            seconds, stdout = timed([sys.executable, "-O", "main.py", "--out", out])
        renders.append(seconds)
        objects = sum(int(line.split()[1]) for line in stdout.splitlines() if line.startswith("rendered "))
    floor, render = statistics.median(floors), statistics.median(renders)
    print(f"{'measure':<34}{'median s':>10}{'runs':>6}")
    print(f"{'floor: import cdk8s + empty synth':<34}{floor:>10.2f}{args.runs:>6}")
    print(f"{'render all envs (' + str(objects) + ' objects)':<34}{render:>10.2f}{args.runs:>6}")
    print(f"{'our code above the floor':<34}{render - floor:>10.2f}")
    print(f"ratio render/floor: {render / floor:.2f}x   targets: render <= 1.5 s, added < 1.0 s")


if __name__ == "__main__":
    main()
