"""The paper's models on the real trainers for a few hundred steps: does the GPU path run, and how fast.

``bench/scaling.py`` times single steps on synthetic inputs; this runs the pipeline's own commands
(``lvdr train-diffae``, ``cache``, ``baseline``, ``train-densenet``, ``train-prm``, ``evaluate``) with
config/paper.yaml's models and recipe (mixed precision, EMA, checkpoints, validation) on a prepared
SPIDER, for the steps bench/paper_short.yaml gives them, and prints each stage's wall time and
throughput, with the hours the paper's step counts would take at that rate. The short runs learn
little: their metrics show that every stage ran, not what the paper's setting reaches.

    python bench/paper_steps.py --prepared data/prepared/spider --out /tmp/paper_steps --threads 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [ROOT / "config" / "config.yaml", ROOT / "config" / "paper.yaml", ROOT / "bench" / "paper_short.yaml"]


def run(name: str, args: list[str], logs: Path) -> float:
    """Run one ``python -m lvdr`` stage; its wall seconds. Stops the benchmark when a stage fails."""
    start = time.perf_counter()
    log = logs / f"{name}.log"
    done = subprocess.run([sys.executable, "-m", "lvdr", *args, "--log", str(log)], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{name} failed (exit {done.returncode}) after {seconds:.0f} s:\n{done.stderr[-4000:]}")
    print(f"{name}: {seconds:.1f} s", flush=True)
    return seconds


def nested(cfg: dict, keys: tuple[str, ...]):
    """cfg[keys[0]][keys[1]]...: a trainer's step count or batch size, wherever its section keeps it."""
    for key in keys:
        cfg = cfg[key]
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared" / "spider",
                        help="a prepared SPIDER at the paper's 64 px (lvdr prepare with config/paper.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="scratch folder for models, predictions and logs")
    parser.add_argument("--config", type=Path, action="append", help="config layers (default: config.yaml, "
                        "paper.yaml, bench/paper_short.yaml)")
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args()

    from lvdr import config as configs  # after --help, which then needs no torch

    layers = args.config or CONFIGS
    cfg = configs.load([str(p) for p in layers])
    common = [a for p in layers for a in ("--config", str(p))]
    out, prepared, threads = args.out.resolve(), str(args.prepared.resolve()), ["--threads", str(args.threads)]
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    seed = str(cfg["seed"])
    times = {
        "train-diffae": run("train-diffae", ["train-diffae", "spider", *common, "--prepared", prepared,
                                             "--seed", seed, "--out", str(out / "diffae"), *threads], logs),
        "cache": run("cache", ["cache", "spider", *common, "--seed", seed, "--model", str(out / "diffae" / "model.pt"),
                               "--prepared", prepared, "--out", str(out / "latents"), *threads], logs),
        "baseline": run("baseline", ["baseline", "spider", "diffae_lr", *common, "--seed", seed, "--latents", str(out / "latents"),
                                     "--prepared", prepared, "--out", str(out / "predictions"), "--models", str(out)], logs),
        "train-densenet": run("train-densenet", [
            "train-densenet", "spider", *common, "--prepared", prepared, "--seed", seed,
            "--out", str(out / "densenet121"), "--predictions", str(out / "predictions" / "densenet121.parquet"),
            *threads], logs),
        "train-prm": run("train-prm", [
            "train-prm", "spider", *common, "--seed", seed, "--prepared", prepared, "--latents", str(out / "latents"),
            "--diffae", str(out / "diffae" / "model.pt"), "--out", str(out / "lvdr"),
            "--predictions", str(out / "predictions" / "lvdr.parquet"), *threads], logs),
        "evaluate": run("evaluate", ["evaluate", "spider", *common, "--predictions",
                                     *map(str, sorted((out / "predictions").rglob("*.parquet"))),
                                     "--prepared", prepared, "--out", str(out / "metrics.json")], logs),
    }
    # training alone, from the DiffAE log ("(N s this run)"), without start-up and the reconstructions
    trained = re.search(r"\((\d+) s this run\)", (logs / "train-diffae.log").read_text())
    paper = configs.load([str(ROOT / "config" / "config.yaml"), str(ROOT / "config" / "paper.yaml")])
    rows = []
    for stage, section, steps_key, batch_key in (("train-diffae", "diffae", ("train", "steps"), ("train", "batch_size")),
                                                 ("train-densenet", "densenet", ("max_steps",), ("batch_size",)),
                                                 ("train-prm", "prm", ("train", "steps"), ("train", "batch_size"))):
        steps, batch = nested(cfg[section], steps_key), nested(cfg[section], batch_key)
        rate = steps / times[stage]
        full = nested(paper[section], steps_key)
        rows.append({"stage": stage, "steps": steps, "batch": batch, "seconds": round(times[stage], 1),
                     "steps_per_s": round(rate, 2), "items_per_s": round(rate * batch, 1),
                     "paper_steps": full, "paper_hours": round(full / rate / 3600, 2)})
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    metrics = json.loads((out / "metrics.json").read_text())
    result = {"device": device, "torch": torch.__version__, "threads": args.threads, "stages": times, "rows": rows,
              "diffae_training_s": int(trained.group(1)) if trained else None, "metrics": metrics}
    (out / "paper_steps.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"\nconfig/paper.yaml's models, {' + '.join(p.name for p in layers)}, on {device} (torch {torch.__version__}):")
    print(f"{'stage':15} {'steps':>6} {'batch':>5} {'wall s':>7} {'steps/s':>8} {'items/s':>8} {'paper steps':>11} {'h at this rate':>14}")
    for r in rows:
        print(f"{r['stage']:15} {r['steps']:>6} {r['batch']:>5} {r['seconds']:>7.1f} {r['steps_per_s']:>8.2f} "
              f"{r['items_per_s']:>8.1f} {r['paper_steps']:>11} {r['paper_hours']:>14.2f}")
    if trained:
        print(f"(DiffAE wall time includes start-up, checkpoints and test reconstructions; its training alone: {trained.group(1)} s)")
    print("wall times include start-up, validation and checkpoints, so the rates are lower bounds")
    print("test metrics after these few steps (they show that each stage ran, not what the paper's setting reaches):")
    for method, m in sorted(metrics["methods"].items()):
        print(f"  {method}: AUC {m['auc_bin']['value']:.3f}, MAE {m['mae_ord']['value']:.3f}")


if __name__ == "__main__":
    main()
