"""Time one PRM training step, part by part, on the demo's stage-1 caches (one thread).

Parts: collate (gather and pad a batch), PRM forward, the L_recon decoder pass, losses and
backward, optimiser and EMA. Needs `data/prepared/<ds>` and stage 1's seed-0 `results/<ds>/latents/seed0` and
`results/<ds>/diffae/seed0/model.pt` (for example from `snakemake --cores 2 results/spider/latents/seed0/tokens.npy`).

    python bench/prm_step.py                     # spider, 40 timed steps after 5 warm-up steps
    python bench/prm_step.py --dataset brats --steps 60 --set prm.dropout=0
    python bench/prm_step.py --against 1c886ff   # also time that commit's step (the issue's "0.4 s") on this machine
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="spider")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--config", action="append", default=None, help="config file(s) (default config/config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--against", metavar="COMMIT", help="then time the PRM step of this commit (its own code and "
                        "demo config, today's caches and decoder) the same way: a same-machine before and after. Knows "
                        "the API of 1c886ff, the commit whose step issue 9 timed")
    args = parser.parse_args()
    steps = time_current(args)
    if args.against:
        old = time_commit(args.against, args.dataset, args.steps)
        print(f"  commit {args.against}: step {1000 * old:7.1f} ms; this tree is {old / steps:.2f}x as fast")
    return 0


def time_current(args) -> float:
    """Print the current step's parts; return the median step in seconds."""
    import torch
    from monai.networks.schedulers import DDPMScheduler

    from lvdr.cli import diffae_path, latents_path
    from lvdr.config import variant
    from lvdr.data import load_latents, load_prepared
    from lvdr.diffae.train import load_model
    from lvdr.prm.model import PRM
    from lvdr.prm.train import channel_statistics, collate, losses, recon_loss, sequences
    from lvdr.training import EMA, seed_step
    from prm_seeds import configured

    torch.set_num_threads(1)
    cfg = variant(configured(args.config, args.set), None, args.dataset)[0]
    data = load_prepared(REPO / "data" / "prepared" / args.dataset)
    features = load_latents(REPO / latents_path(args.dataset, 0))
    diffae, dcfg = load_model(REPO / diffae_path(args.dataset, 0), "cpu")
    decoder = diffae.decoder.eval().requires_grad_(False)
    scheduler = DDPMScheduler(num_train_timesteps=dcfg["timesteps"], schedule=dcfg["beta_schedule"])
    train_seqs = [s for s in sequences(data, cfg["t_max"]) if s.split == "train"]
    task = data.meta["task"]
    torch.manual_seed(0)
    model = PRM(features[1].shape[2], features[1].shape[1], dcfg["z_dim"], data.num_classes, cfg, features[0].shape[1])
    rows = np.sort(np.concatenate([s.rows for s in train_seqs]))  # the inputs scaled as training scales them
    model.set_input_statistics(channel_statistics(features[1], rows), channel_statistics(features[0], rows))
    ema = EMA(model, 0.99)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    parts = {name: [] for name in ("collate", "forward", "recon", "backward", "optimiser+ema", "step")}
    for step in range(args.steps + 5):
        seed_step(0, step)
        t0 = time.perf_counter()
        batch = [train_seqs[i] for i in np.random.randint(0, len(train_seqs), cfg["train"]["batch_size"])]
        inputs = collate(batch, features, "cpu")
        labels = torch.as_tensor([s.grade for s in batch])
        model.train()
        t1 = time.perf_counter()
        out = model(**inputs)
        t2 = time.perf_counter()
        recon = recon_loss(decoder, scheduler, out["z_sem"], batch, data.slices, cfg["recon_k"], "cpu",
                           fraction=cfg["recon_fraction"])
        t3 = time.perf_counter()
        terms = losses(cfg, task, out, labels, inputs["mask"], recon)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update(model)
        t5 = time.perf_counter()
        if step >= 5:
            for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)):
                parts[name].append(seconds)
    t = max(len(s.rows) for s in train_seqs)
    print(f"{args.dataset}: PRM {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, batch "
          f"{cfg['train']['batch_size']}, up to {t} slices, one thread, median of {args.steps} steps:")
    for name, values in parts.items():
        print(f"  {name:<14} {1000 * np.median(values):7.1f} ms")
    return float(np.median(parts["step"]))


def time_commit(commit: str, dataset: str, steps: int) -> float:
    """The median PRM training step (seconds, one thread) of an older commit's code and demo config, on today's
    caches and with today's decoder for L_recon. The old package is extracted with `git archive` and imported in
    place of this one after the decoder is loaded, so both run in this process on the same data."""
    import io
    import subprocess
    import tarfile
    import tempfile

    import torch
    from monai.networks.schedulers import DDPMScheduler

    from lvdr.cli import diffae_path, latents_path
    from lvdr.diffae.train import load_model

    diffae, dcfg = load_model(REPO / diffae_path(dataset, 0), "cpu")
    decoder = diffae.decoder.eval().requires_grad_(False)
    tree = Path(tempfile.mkdtemp(prefix="prm_step_"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "lvdr", "config", "workflow/schemas"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    for name in [m for m in sys.modules if m == "lvdr" or m.startswith("lvdr.")]:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    from lvdr import config as configs
    from lvdr.data import load_prepared
    from lvdr.prm.model import PRM
    from lvdr.prm.train import collate, losses, recon_loss, sequences
    from lvdr.training import seed_step

    cfg = configs.validate(configs.load([str(tree / "config" / "config.yaml")]))["prm"]
    data = load_prepared(REPO / "data" / "prepared" / dataset)
    tokens = np.load(REPO / latents_path(dataset, 0) / "tokens.npy", mmap_mode="r")
    scheduler = DDPMScheduler(num_train_timesteps=dcfg["timesteps"], schedule=dcfg["beta_schedule"])
    train_seqs = [s for s in sequences(data, cfg["t_max"]) if s.split == "train"]
    torch.manual_seed(0)
    model = PRM(tokens.shape[2], tokens.shape[1], dcfg["z_dim"], data.num_classes, cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for step in range(steps + 5):
        seed_step(0, step)
        start = time.perf_counter()
        batch = [train_seqs[i] for i in np.random.randint(0, len(train_seqs), cfg["train"]["batch_size"])]
        x, depth, mask = collate(batch, tokens, "cpu")
        model.train()
        out = model(x, depth, mask)
        recon = recon_loss(decoder, scheduler, out["z_sem"], batch, data.slices, cfg["recon_k"], "cpu")
        terms = losses(cfg, data.meta["task"], out, torch.as_tensor([s.grade for s in batch]), mask, recon)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step >= 5:
            times.append(time.perf_counter() - start)
    print(f"{dataset}: commit {commit}: PRM {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, batch "
          f"{cfg['train']['batch_size']}, one thread, median of {steps} steps")
    return float(np.median(times))


if __name__ == "__main__":
    sys.exit(main())
