"""The PRM's spread over seeds: train LVDR once per seed on the existing stage-1 caches, then print
each seed's test metrics, the step its checkpoint came from, and the explanation checks (step size
against evidence, raw and relative to the typical step at each index; the deletion test: how much
deleting the largest steps changes the prediction (del: total variation) against random slices and
the usual positions, and the signed drop in the predicted class's probability (drop); how far apart
the grades' ||P_t|| profiles are).

Needs `data/prepared/<ds>` and stage 1's `results/<ds>/latents/seedK` and `results/<ds>/diffae/seedK` (for example
from `snakemake --cores 2 results/spider/latents/seed0/tokens.npy`): each seed reads the stage 1 the pipeline pairs
it with (lvdr.config.stage1_seed), or --stage1 K's for all. Runs go to a scratch folder, so
your results/ are left alone; --jobs runs that many seeds side by side on one thread each.

    python bench/prm_seeds.py                                  # spider and brats, seeds 0-4
    python bench/prm_seeds.py --datasets spider --seeds 0 1 2 --set prm.train.steps=300
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's lvdr, not whichever one the environment has installed
DELETION = ("shift_top", "shift_random", "p_shift", "shift_usual", "p_shift_usual", "drop_top", "drop_random")


def override(cfg: dict, assignment: str) -> None:
    """Apply 'a.b.c=VALUE' (VALUE parsed as JSON where it can be) to a nested config."""
    key, _, value = assignment.partition("=")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = parsed


def seed_parser(doc: str) -> argparse.ArgumentParser:
    """The options every seed study shares: --seeds, --config, --set and --jobs."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--config", action="append", default=None, help="config file(s) (default config/config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained side by side (one thread each)")
    return parser


def configured(config_files: list[str] | None, sets: list[str]) -> dict:
    """The config from these files (None: this checkout's config/config.yaml) with the 'a.b.c=VALUE' overrides
    applied, validated: the overrides are checked like any config key."""
    from lvdr import config as configs

    cfg = configs.load(config_files or [str(REPO / "config" / "config.yaml")])
    for assignment in sets:
        override(cfg, assignment)
    return configs.validate(cfg)


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd (0 for one value) over seeds."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def print_seed_table(rows: list[dict], info: tuple[str, ...], metrics: tuple[str, ...]) -> None:
    """One line per seed (its seed, seconds, the ``info`` columns as they are and the ``metrics`` to three
    decimals, '-' where None), then each metric's mean and sd over the seeds."""
    print(f"{'seed':>4} {'s':>5} " + " ".join(f"{k:>7}" for k in info + metrics))
    for r in rows:
        cells = [f"{r[k]:>7}" for k in info] + [f"{'-' if r[k] is None else format(r[k], '.3f'):>7}" for k in metrics]
        print(f"{r['seed']:>4} {r['seconds']:5.0f} " + " ".join(cells))
    for key in metrics:
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            print("{}: mean {:.3f} sd {:.3f}".format(key, *spread(values)))


def run_one(dataset: str, seed: int, config_files: list[str] | None, sets: list[str], scratch: str,
            stage1: int | None = None) -> dict:
    import torch

    torch.set_num_threads(1)
    from lvdr.cli import diffae_path, latents_path
    from lvdr.config import stage1_seed, variant
    from lvdr.data import load_prepared
    from lvdr.evaluate.metrics import point_metrics
    from lvdr.explain.deletion import deletion_test
    from lvdr.explain.trajectories import (centroid_approach, evidence_correlation, evidence_correlation_within_index,
                                           load_trajectories, norm_separation, step_profile)
    from lvdr.predictions import read_predictions
    from lvdr.prm.train import train

    cfg = configured(config_files, sets)
    out = Path(scratch) / dataset / f"seed{seed}"
    prepared = REPO / "data" / "prepared" / dataset
    stage1 = stage1_seed(cfg, seed) if stage1 is None else stage1
    latents = REPO / latents_path(dataset, stage1)
    start = time.perf_counter()
    train(variant(cfg, None, dataset)[0], prepared, latents, REPO / diffae_path(dataset, stage1), out, out / "predictions.parquet",
          seed, "cpu")
    seconds = time.perf_counter() - start
    data = load_prepared(prepared)
    frame = read_predictions(out / "predictions.parquet")
    test = frame[frame.split == "test"]
    metrics = point_metrics(test, data.meta["task"], data.num_classes)
    saved = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
    every = load_trajectories(out / "trajectories.npz")
    trajs = [t for t in every if t["split"] == "test"]
    evidence = data.table.evidence.to_numpy(dtype=float)
    corr = evidence_correlation(trajs, evidence)
    profile = step_profile([t for t in every if t["split"] == "train"])
    profiled = evidence_correlation_within_index(trajs, evidence)
    deletion = deletion_test(trajs, out / "model.pt", latents, fraction=0.2, repeats=10, seed=seed, profile=profile)
    return {"dataset": dataset, "seed": seed, "seconds": seconds, "best_step": saved["best_step"],
            "auc": metrics["auc_bin"], "f1": metrics["f1_bin"], "mae": metrics["mae_ord"],
            "rho": corr["rho"], "rho_p": corr["p"], "rho_pos": profiled["rho"], "rho_pos_p": profiled["p"],
            **{f"del_{k}": deletion.get(k) for k in DELETION}, "norm": norm_separation(trajs),
            "centroid": centroid_approach([t for t in every if t["split"] == "train"], trajs)}


def main() -> int:
    parser = seed_parser(__doc__)
    parser.add_argument("--datasets", nargs="+", default=["spider", "brats"])
    parser.add_argument("--stage1", type=int, metavar="K", help="read stage-1 seed K's latents in every run (default: "
                                                                "each seed's own, as the pipeline pairs them)")
    parser.add_argument("--keep", metavar="DIR", help="keep the runs in DIR (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", help="also write every row to FILE")
    args = parser.parse_args()
    from lvdr.explain.verdicts import centroid_verdict, norm_across_seeds, order_verdict

    scratch = args.keep or tempfile.mkdtemp(prefix="prm_seeds_")
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, ds, seed, args.config, args.set, scratch, args.stage1) for ds in args.datasets for seed in args.seeds]
        rows = [f.result() for f in futures]
    print(f"{'dataset':8} {'seed':>4} {'s':>5} {'best':>5} {'AUC':>6} {'F1':>6} {'MAE':>6} {'rho':>7} {'p':>8} "
          f"{'rho pos':>7} {'p':>8} {'del top':>8} {'del rnd':>8} {'del p':>7} {'del usual':>9} {'p':>7} {'drop top':>8} "
          f"{'drop rnd':>8} {'norm rng':>8} {'n rho':>6} {'centroid':>16} {'order':>16}")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        print(f"{r['dataset']:8} {r['seed']:>4} {r['seconds']:5.0f} {r['best_step']:>5} {fmt(r['auc'], '6.3f')} "
              f"{fmt(r['f1'], '6.3f')} {fmt(r['mae'], '6.3f')} {fmt(r['rho'], '7.3f')} {fmt(r['rho_p'], '8.1e')} "
              f"{fmt(r['rho_pos'], '7.3f')} {fmt(r['rho_pos_p'], '8.1e')} {fmt(r['del_shift_top'], '8.3f')} {fmt(r['del_shift_random'], '8.3f')} {fmt(r['del_p_shift'], '7.3f')} "
              f"{fmt(r['del_shift_usual'], '9.3f')} {fmt(r['del_p_shift_usual'], '7.3f')} {fmt(r['del_drop_top'], '8.3f')} "
              f"{fmt(r['del_drop_random'], '8.3f')} {fmt(r['norm']['range'], '8.3f')} {fmt(r['norm']['rho'], '6.2f')} "
              f"{centroid_verdict(r['centroid'])[0]:>16} {order_verdict(r['centroid'])[0]:>16}")
    for ds in args.datasets:
        mine = [r for r in rows if r["dataset"] == ds]
        for key in ("auc", "f1", "mae"):
            values = [r[key] for r in mine if r[key] is not None]
            if values:
                mean, sd = spread(values)
                print(f"{ds} {key}: mean {mean:.3f} sd {sd:.3f} (min {min(values):.3f}, max {max(values):.3f})")
        word, sentence = norm_across_seeds([r["norm"] for r in mine])
        print(f"{ds} ||P_t|| across seeds: {word}: {sentence}")
    print(f"wall time {time.perf_counter() - start:.0f} s; runs in {scratch}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
