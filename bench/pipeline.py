"""Time the complete pipeline from empty data/ and results/ to results/report.html.

Runs Snakemake in a scratch project folder (your data/ and results/ are left alone) with the
given config, then prints the wall time, each job's own time from its log, and whether the run
met the goal: the demo config is sized to finish within 10 minutes on a 2-core laptop CPU.

    python bench/pipeline.py                       # config/config.yaml, --cores 8, goal 600 s
    python bench/pipeline.py --config my.yaml --cores 4 --goal 900 --keep /tmp/run
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lvdr.log import job_times  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"), help="config to run (default: the demo)")
    parser.add_argument("--cores", type=int, default=8, help="snakemake --cores (default 8, as in the README)")
    parser.add_argument("--goal", type=float, default=600.0, help="seconds the run should take at most (default 600)")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR (must not exist) and keep it, instead of a temporary folder")
    args = parser.parse_args()

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lvdr-bench-"))
    workdir.mkdir(parents=True, exist_ok=not args.keep)
    (workdir / "config").mkdir()
    shutil.copy(args.config, workdir / "config" / "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", str(args.cores), "results/report.html"]
    print("running:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    # the jobs' `python -m lvdr` must import this checkout, not whichever one the environment has installed
    # (an editable install of another clone would otherwise time that clone's code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        print(f"pipeline failed after {wall:.0f} s; its folder is kept: {workdir}", file=sys.stderr)
        return 1

    times = job_times(workdir / "logs", cpu=True)
    width = max(len(name) for name, *_ in times)
    print(f"  {'job':<{width}}  {'wall':>8}  {'CPU':>8}")
    for name, seconds, cpu in times:
        print(f"  {name:<{width}}  {seconds:6.1f} s  {cpu or float('nan'):6.1f} s")
    print(f"  {'sum':<{width}}  {sum(t[1] for t in times):6.1f} s  {sum(t[2] or 0 for t in times):6.1f} s")
    verdict = "met" if wall <= args.goal else "MISSED"
    print(f"complete pipeline: {wall:.0f} s ({wall / 60:.1f} min) wall; goal {args.goal:.0f} s: {verdict}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if wall <= args.goal else 2


if __name__ == "__main__":
    sys.exit(main())
