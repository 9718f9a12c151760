"""Stage 1's spread over seeds: train the DiffAE once per seed on a prepared dataset, cache its latents,
and fit DiffAE + LR (the latent baseline, slices aggregated to the sequence) on them; print each seed's
test metrics, with mean and sd across seeds, and the training-split grade probe that ``diffae.inits``
chooses by (lvdr.diffae.probe). Every later model reads these latents, so this is the
floor and the spread that stage 1 hands on. Runs go to a scratch folder, so results/ is left alone;
--jobs trains that many seeds side by side on one thread each.

    python bench/diffae_seeds.py --dataset brats
    python bench/diffae_seeds.py --dataset brats --prepared /tmp/runB/data/prepared/brats --set diffae.train.steps=300
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prm_seeds import REPO, configured, print_seed_table, seed_parser  # noqa: E402

KEYS = ("auc_bin", "f1_bin", "mae_ord")


def run_one(prepared: str, seed: int, config_files: list[str] | None, sets: list[str], scratch: str, dataset: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from lvdr.baselines.latent import fit_predict
    from lvdr.data import load_latents, load_prepared
    from lvdr.diffae.cache import build_cache
    from lvdr.diffae.probe import grade_error, sequence_means
    from lvdr.diffae.train import load_model, train
    from lvdr.evaluate.metrics import point_metrics

    cfg = configured(config_files, sets)
    out = Path(scratch) / f"seed{seed}"
    start = time.perf_counter()
    from lvdr.config import stage1_config

    model = train(stage1_config(cfg, dataset), prepared, out / "diffae", seed, "cpu")
    build_cache(model, prepared, out / "latents", cfg["cache"]["batch_size"], "cpu")
    seconds = time.perf_counter() - start
    data = load_prepared(prepared)
    z, _ = load_latents(out / "latents")
    frame, fitted = fit_predict("diffae_lr", np.asarray(z), data, cfg["baselines"], cfg["seed"])
    metrics = point_metrics(frame[frame.split == "test"], data.meta["task"], data.num_classes)
    probe = grade_error(*sequence_means(load_model(model)[0], data, "cpu"), cfg["seed"])  # what diffae.inits reads
    return {"seed": seed, "seconds": seconds, "C": fitted["C"], "probe": probe, **{k: metrics[k] for k in KEYS}}


def main() -> int:
    parser = seed_parser(__doc__)
    parser.add_argument("--dataset", default="brats")
    parser.add_argument("--prepared", help="prepared dataset folder (default data/prepared/<dataset> in this checkout)")
    args = parser.parse_args()
    prepared = args.prepared or str(REPO / "data" / "prepared" / args.dataset)
    scratch = tempfile.mkdtemp(prefix="diffae_seeds_")
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run_one, *zip(*[(prepared, s, args.config, args.set, scratch, args.dataset) for s in args.seeds])))
    print_seed_table(rows, ("C",), ("probe",) + KEYS)
    print(f"wall time {time.perf_counter() - start:.0f} s; runs in {scratch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
