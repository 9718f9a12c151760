"""How exact is the DDIM round trip of a trained DiffAE? Encode slices to x_T (conditioned on their
own z), decode back, and print the PSNR; the decoded reasoning states and counterfactuals are only as
readable as this round trip (issue 12 asks for at least 30 dB on the demo SPIDER model).

    python bench/ddim_roundtrip.py                      # results/spider, 16 training slices, diffae.ddim_steps
    python bench/ddim_roundtrip.py --dataset brats --steps 20 50 100 --split test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lvdr.cli import diffae_path  # noqa: E402
from lvdr.data import load_prepared, to_model_range  # noqa: E402
from lvdr.diffae.sampling import decode, encode_noise  # noqa: E402
from lvdr.diffae.train import load_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="spider")
    parser.add_argument("--root", default=".", help="project folder holding data/ and results/ (default: here)")
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=0, help="which stage-1 model: results/DATASET/diffae/seedN (default 0)")
    parser.add_argument("--steps", type=int, nargs="*", help="DDIM steps (default: the model's diffae.ddim_steps)")
    parser.add_argument("--goal", type=float, default=30.0, help="PSNR (dB) the configured steps should reach")
    args = parser.parse_args()
    root = Path(args.root)
    model, cfg = load_model(root / diffae_path(args.dataset, args.seed))
    data = load_prepared(root / "data" / "prepared" / args.dataset)
    rows = np.random.default_rng(0).choice(data.rows(args.split), args.slices, replace=False)
    x0 = to_model_range(data.slices[np.sort(rows)])
    with torch.no_grad():
        z, _ = model.encode(x0)
    ok = True
    for steps in args.steps or [cfg["ddim_steps"]]:
        back = decode(model.decoder, encode_noise(model.decoder, x0, z, cfg, steps), z, cfg, steps)
        mse = float((((back + 1) / 2 - (x0 + 1) / 2) ** 2).mean())
        psnr = 10 * np.log10(1 / mse)
        configured = steps == cfg["ddim_steps"]
        ok &= psnr >= args.goal or not configured
        print(f"{args.dataset}: {args.slices} {args.split} slices, {steps} DDIM steps: PSNR {psnr:.1f} dB"
              + (f" (configured steps; goal {args.goal:g} dB: {'met' if psnr >= args.goal else 'NOT met'})" if configured else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
