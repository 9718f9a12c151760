"""DiffAE training and encoding throughput (images/s) for the demo and paper configs on this device.

    python bench/diffae.py                       # both configs, device from the config (auto)
    python bench/diffae.py --steps 20 --device cuda

A benchmark, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler

from lvdr import config as configs
from lvdr.diffae.model import DiffAE
from lvdr.training import autocast, pick_device

ROOT = Path(__file__).resolve().parent.parent


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(cfg: dict, device: torch.device, steps: int, channels: int = 1) -> dict:
    d = cfg["diffae"]
    size, batch = cfg["spider"]["prepare"]["image_size"], d["train"]["batch_size"]
    model = DiffAE(channels, size, d).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=d["train"]["lr"])
    scheduler = DDPMScheduler(num_train_timesteps=d["timesteps"], schedule=d["beta_schedule"])
    x0 = torch.rand(batch, channels, size, size, device=device) * 2 - 1

    def train_step():
        noise = torch.randn_like(x0)
        t = torch.randint(0, d["timesteps"], (batch,), device=device)
        with autocast(device, d["train"]["precision"]):
            prediction = model(scheduler.add_noise(x0, noise, t), t, x0)
        loss = F.mse_loss(prediction.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train_step()  # warm-up (allocations, kernels)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync(device)
    train_rate = steps * batch / (time.perf_counter() - start)

    encode_batch = cfg["cache"]["batch_size"]
    xs = torch.rand(encode_batch, channels, size, size, device=device)
    model.eval()
    with torch.no_grad(), autocast(device, d["train"]["precision"]):
        model.encode(xs)
        sync(device)
        start = time.perf_counter()
        for _ in range(max(1, steps // 2)):
            model.encode(xs)
        sync(device)
    encode_rate = max(1, steps // 2) * encode_batch / (time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"params_M": params, "image": size, "batch": batch, "train_img_s": train_rate, "encode_img_s": encode_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=[str(ROOT / "config/config.yaml"), str(ROOT / "config/paper.yaml")])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per config")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for path in args.configs:
        cfg = configs.load([path])
        device = pick_device(args.device or cfg["device"])
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        r = bench(cfg, device, args.steps)
        print(f"{Path(path).name:12s} on {name}: {r['params_M']:.2f}M params, {r['image']}x{r['image']}, batch {r['batch']}: "
              f"train {r['train_img_s']:.1f} img/s, encode {r['encode_img_s']:.1f} img/s")


if __name__ == "__main__":
    main()
