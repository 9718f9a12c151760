"""What the paper's setting costs: each trainer's step at config/paper.yaml, timed on this device and
counted in FLOPs, scaled to the configured number of steps.

For DiffAE (80k steps of 64 images), DenseNet121 (at most 20k steps of 64 slices) and the PRM
(20k steps of 12 sequences, with L_recon through the frozen 87M-parameter decoder at K = 3 slices
per sequence) it times a few training steps on synthetic inputs of the paper's shapes, counts the
FLOPs of one step (forward and backward, torch.utils.flop_counter: matmuls and convolutions), and
prints the hours the whole run takes at the measured speed. Where no GPU is at hand, GPU hours are
*estimated* from the FLOPs at an assumed sustained throughput (a share of a GPU's dense peak; see
--gpu-tflops and --utilisation), and printed as estimates.

    python bench/scaling.py                          # the device the config picks (auto)
    python bench/scaling.py --time-batch 8 --repeats 2   # CPU: time smaller batches, scale per item
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler
from torch.utils.flop_counter import FlopCounterMode

from lvdr import config as configs
from lvdr.baselines.densenet import build as build_densenet
from lvdr.diffae.model import DiffAE
from lvdr.prm.model import PRM
from lvdr.prm.train import trajectory_loss
from lvdr.training import MixedPrecision, pick_device

ROOT = Path(__file__).resolve().parent.parent
GPUS = {"NVIDIA L4 (paper), fp16 dense": 121.0, "NVIDIA H200, bf16 dense": 989.0}  # datasheet peak TFLOPS


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step, items: int, repeats: int, device) -> tuple[float, float]:
    """(seconds per item, FLOPs per item) of ``step``, which trains on ``items`` items."""
    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    flops = counter.get_total_flops()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync(device)
    return (time.perf_counter() - start) / repeats / items, flops / items


def diffae_step(cfg, device, batch):
    d = cfg["diffae"]
    size = cfg["spider"]["prepare"]["image_size"]
    model = DiffAE(1, size, d).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=d["train"]["lr"])
    precision = MixedPrecision(device, d["train"]["precision"])
    scheduler = DDPMScheduler(num_train_timesteps=d["timesteps"], schedule=d["beta_schedule"])
    x0 = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    t = torch.randint(0, d["timesteps"], (batch,), device=device)

    def step():  # as lvdr.diffae.train: noise x0 to step t, predict the noise
        noise = torch.randn_like(x0)
        with precision.autocast():
            loss = F.mse_loss(model(scheduler.add_noise(x0, noise, t), t, x0).float(), noise)
        optimizer.zero_grad(set_to_none=True)
        precision.step(loss, optimizer, model.parameters(), d["train"]["grad_clip"])

    return step, model


def densenet_step(cfg, device, batch):
    c = cfg["densenet"]
    size = cfg["spider"]["prepare"]["image_size"]
    model = build_densenet(1, 5, size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=c["lr"])
    precision = MixedPrecision(device, c["precision"])
    x, y = torch.rand(batch, 1, size, size, device=device), torch.randint(0, 5, (batch,), device=device)

    def step():
        with precision.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        precision.step(loss, optimizer, model.parameters(), c["grad_clip"])

    return step


def prm_step(cfg, device, batch, slices, diffae):
    """One PRM step: the PRM over ``slices`` slices per sequence and L_recon through the frozen decoder."""
    p, d = cfg["prm"], cfg["diffae"]
    size = cfg["spider"]["prepare"]["image_size"]
    with torch.no_grad():
        z, tokens = diffae.encode(torch.zeros(1, 1, size, size, device=device))
    model = PRM(tokens.shape[2], tokens.shape[1], z.shape[1], 5, p, z.shape[1]).to(device)
    decoder = diffae.decoder.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=p["train"]["lr"])
    precision = MixedPrecision(device, p["train"]["precision"])
    inputs = {"tokens": torch.randn(batch, slices, *tokens.shape[1:], device=device),
              "depth": torch.arange(slices, device=device).float().expand(batch, -1),
              "mask": torch.ones(batch, slices, dtype=torch.bool, device=device),
              "codes": torch.randn(batch, slices, z.shape[1], device=device)}
    k = p["recon_k"]
    x0 = torch.rand(batch * k, 1, size, size, device=device) * 2 - 1
    t = torch.randint(0, d["timesteps"], (batch * k,), device=device)
    labels = torch.randint(0, 5, (batch,), device=device)

    def step():
        model.train()
        with precision.autocast():
            out = model(**inputs)
            noise = torch.randn_like(x0)
            recon = F.mse_loss(decoder(x0 + noise, t, out["z_sem"].repeat_interleave(k, 0)).float(), noise)
            loss = recon + p["lambda_traj"] * trajectory_loss(out["P"], inputs["mask"]) + F.cross_entropy(out["logits"].float(), labels)
        optimizer.zero_grad(set_to_none=True)
        precision.step(loss, optimizer, model.parameters(), p["train"]["grad_clip"])

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "config" / "paper.yaml"))
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's)")
    parser.add_argument("--time-batch", type=int, default=None,
                        help="items per timed step (default: the config's batch; a CPU can time fewer and scale per item)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model")
    parser.add_argument("--slices", type=int, default=16, help="slices per PRM sequence (SPIDER discs: about 10-20)")
    parser.add_argument("--utilisation", type=float, default=0.3,
                        help="share of a GPU's dense peak sustained in training, for the FLOP-based estimates (default 0.3)")
    args = parser.parse_args()
    cfg = configs.load([args.config])
    device = pick_device(args.device or cfg["device"])
    torch.manual_seed(0)
    runs = []
    for name, steps, batch, make in (
            ("DiffAE", cfg["diffae"]["train"]["steps"], cfg["diffae"]["train"]["batch_size"], "diffae"),
            ("DenseNet121", cfg["densenet"]["max_steps"], cfg["densenet"]["batch_size"], "densenet"),
            ("PRM", cfg["prm"]["train"]["steps"], cfg["prm"]["train"]["batch_size"], "prm")):
        timed = min(batch, args.time_batch or batch)
        if make == "diffae":
            step, diffae = diffae_step(cfg, device, timed)
        elif make == "densenet":
            step = densenet_step(cfg, device, timed)
        else:
            step = prm_step(cfg, device, timed, args.slices, diffae)
        seconds, flops = measure(step, timed, args.repeats, device)
        runs.append((name, steps, batch, seconds, flops))
        print(f"{name}: {timed} items a timed step, {1 / seconds:.2f} items/s, {flops / 1e9:.1f} GFLOP per item", flush=True)
    print(f"\nThe setting of {Path(args.config).name}, scaled to its steps, on {device.type}"
          f"{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}:")
    print(f"{'model':12} {'steps':>6} {'batch':>5} {'items/s':>8} {'hours here':>10} {'PFLOP':>7}  "
          + "  ".join(f"est. h, {g}" for g in GPUS))
    for name, steps, batch, seconds, flops in runs:
        total = steps * batch * flops
        estimates = [total / (peak * 1e12 * args.utilisation) / 3600 for peak in GPUS.values()]
        print(f"{name:12} {steps:>6} {batch:>5} {1 / seconds:>8.2f} {steps * batch * seconds / 3600:>10.1f} "
              f"{total / 1e15:>7.0f}  " + "  ".join(f"{e:>{len('est. h, ' + g)}.2f}" for e, g in zip(estimates, GPUS)))
    print(f"('est.' columns: FLOPs / ({args.utilisation:.0%} of the datasheet's dense peak); 'hours here' is measured"
          + ("; on a GPU, measure with --device cuda instead)" if device.type != "cuda" else
             "; on an H200 the measured hours were far above these estimates: README, 'Measured on an H200')"))


if __name__ == "__main__":
    main()
