"""Rendering speed, measured on demand (never asserted in tests).

Runs, each in a fresh Python process so that nothing is warm, side by side
in one run (medians over --runs):
  floor      `import cdk8s` and an empty App().synth(): jsii and Node start-up
  committed  main.py rendering the committed envs (and dist/argocd)
  previews   the same plus 20 preview-sized envs (extends: _preview), each
             with its own namespace and host, in one render
and prints wall seconds, CPU seconds (Python and its Node kernel), the cost
per extra environment, and pass or fail against the targets of this 2-core
machine: committed envs <= 1.5 s, committed + 20 previews <= 5 s.

usage: .venv/bin/python bench/synth.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "import cdk8s, tempfile; cdk8s.App(outdir=tempfile.mkdtemp()).synth()"
EXTRA_ENVS = 20
TARGETS = {"committed": 1.5, "previews": 5.0}


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float
    objects: int


def timed(command: list[str]) -> Sample:
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    objects = sum(int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("rendered "))
    return Sample(wall, cpu, objects)


def preview_envs(target: Path) -> Path:
    """env/ plus EXTRA_ENVS preview-sized profiles that render like previews."""
    shutil.copytree(ROOT / "env", target)
    for i in range(1, EXTRA_ENVS + 1):
        (target / f"bench-{i:02d}.yaml").write_text(
            f"extends: _preview\nnamespace: vibearena-bench-{i:02d}\n"
            f"domain: bench-{i:02d}.bench.vibearena.example.com\n"
            f"secrets: {{remote_key: vibearena/bench-{i:02d}}}\n")
    return target


def render(env_dir: Path) -> Sample:
    with tempfile.TemporaryDirectory() as out:
        # As `cdk8s synth` runs it (cdk8s.yaml): -O drops jsii's argument type checks.
        return timed([sys.executable, "-O", "main.py", "--env-dir", str(env_dir), "--out", out])


def median(samples: list[Sample]) -> Sample:
    return Sample(statistics.median(s.wall for s in samples), statistics.median(s.cpu for s in samples),
                  samples[0].objects)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[Sample]] = {"floor": [], "committed": [], "previews": []}
    with tempfile.TemporaryDirectory() as tmp:
        extra = preview_envs(Path(tmp) / "env")
        for _ in range(args.runs):
            runs["floor"].append(timed([sys.executable, "-c", FLOOR]))
            runs["committed"].append(render(ROOT / "env"))
            runs["previews"].append(render(extra))
    floor, committed, previews = (median(runs[k]) for k in ("floor", "committed", "previews"))
    per_env = (previews.wall - committed.wall) / EXTRA_ENVS
    print(f"{'measure':<44}{'wall s':>8}{'cpu s':>8}{'objects':>9}")
    print(f"{'floor: import cdk8s + empty synth':<44}{floor.wall:>8.2f}{floor.cpu:>8.2f}{'':>9}")
    print(f"{'committed envs + argocd':<44}{committed.wall:>8.2f}{committed.cpu:>8.2f}{committed.objects:>9}")
    print(f"{f'committed + {EXTRA_ENVS} preview-sized envs':<44}{previews.wall:>8.2f}{previews.cpu:>8.2f}"
          f"{previews.objects:>9}")
    print(f"{'marginal cost per extra env':<44}{per_env:>8.2f}"
          f"{(previews.cpu - committed.cpu) / EXTRA_ENVS:>8.2f}")
    print(f"our code above the floor (committed): {committed.wall - floor.wall:.2f} s; medians of {args.runs} runs")
    failed = 0
    for key, sample in (("committed", committed), ("previews", previews)):
        ok = sample.wall <= TARGETS[key]
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {key}: {sample.wall:.2f} s (target <= {TARGETS[key]} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
