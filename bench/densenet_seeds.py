"""DenseNet121's spread over seeds: train the slice baseline once per seed on an existing prepared
dataset and print each seed's test metrics (MedMNIST's accuracy and macro AUC for graded tasks),
the step its weights came from, and mean and sd across seeds. Runs go to a scratch folder, so
results/ is left alone; --jobs trains that many seeds side by side on one thread each.

    python bench/densenet_seeds.py --dataset retinamnist --config config/config.yaml \\
        --config config/retinamnist.yaml --set densenet.select=auc
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prm_seeds import REPO, configured, print_seed_table, seed_parser  # noqa: E402

KEYS = ("auc_bin", "f1_bin", "mae_ord", "acc", "auc_ovr")


def run_one(dataset: str, seed: int, config_files: list[str] | None, sets: list[str], scratch: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from lvdr.baselines.densenet import train
    from lvdr.data import load_prepared
    from lvdr.evaluate.metrics import point_metrics
    from lvdr.predictions import read_predictions

    cfg = configured(config_files, sets)
    out = Path(scratch) / dataset / f"seed{seed}"
    prepared = REPO / "data" / "prepared" / dataset
    start = time.perf_counter()
    train(cfg["densenet"], prepared, out, out / "predictions.parquet", seed, "cpu")
    seconds = time.perf_counter() - start
    data = load_prepared(prepared)
    frame = read_predictions(out / "predictions.parquet")
    metrics = point_metrics(frame[frame.split == "test"], data.meta["task"], data.num_classes)
    best = torch.load(out / "model.pt", map_location="cpu", weights_only=False)["best_step"]
    return {"seed": seed, "seconds": seconds, "best_step": best, **{k: metrics[k] for k in KEYS}}


def main() -> int:
    parser = seed_parser(__doc__)
    parser.add_argument("--dataset", default="retinamnist")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="densenet_seeds_")
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run_one, *zip(*[(args.dataset, s, args.config, args.set, scratch) for s in args.seeds])))
    print_seed_table(rows, ("best_step",), KEYS)
    print(f"wall time {time.perf_counter() - start:.0f} s; runs in {scratch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
