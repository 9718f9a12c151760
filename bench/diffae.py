"""DiffAE training and encoding throughput (images/s) for the demo and paper configs on this device.

    python bench/diffae.py                       # both configs, device from the config (auto)
    python bench/diffae.py --steps 20 --device cuda
    python bench/diffae.py --compare PATH        # ours against the official DiffAE, timed in one run

``--compare PATH`` takes a local copy of the official implementation (github.com/phizaz/diffae; its
model/ package needs only torch and numpy, and is imported from PATH by this benchmark alone, never
by lvdr) and trains both autoencoders at the paper's setting (64 x 64 x 1, base 64, mult 1-2-4-8,
encoder mult 1-2-4-8-8, attention at 16, 2 residual blocks, z 512: config/paper.yaml against the
official ffhq64_autoenc template with one image channel) on the same batches of real RetinaMNIST
images, in interleaved rounds so that all see the same machine load. It prints images/s, their
ratios and the training loss over the last round. Ours runs with what the field uses: bf16 autocast
where the CPU has native bf16 (``--precision``) and channels-last memory; the official model as it
trains on a CPU (fp32), and, so that the source of the difference is plain, also under the same
autocast. The README gives the figures measured here. Tried and not used: ``torch.compile`` (156 s to
compile the DiffAE on this 2-core CPU, then no faster than eager); MONAI's fused-attention path
(use_flash_attention: 0.98 img/s both ways in an earlier fp32 A/B run).

A benchmark, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
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


def official_model(path: Path, size: int, channels: int):
    """The official DiffAE autoencoder (BeatGANsAutoencModel) with its ffhq64_autoenc settings, for ``channels`` images."""
    import sys

    sys.path.insert(0, str(path))
    from model.unet_autoenc import BeatGANsAutoencConfig

    return BeatGANsAutoencConfig(
        attention_resolutions=(16,), channel_mult=(1, 2, 4, 8), conv_resample=True, dims=2, dropout=0.1,
        embed_channels=512, enc_out_channels=512, enc_pool="adaptivenonzero", enc_num_res_block=2,
        enc_channel_mult=(1, 2, 4, 8, 8), enc_grad_checkpoint=False, enc_attn_resolutions=None, image_size=size,
        in_channels=channels, model_channels=64, num_classes=None, num_head_channels=-1, num_heads_upsample=-1,
        num_heads=1, num_res_blocks=2, num_input_res_blocks=None, out_channels=channels, resblock_updown=True,
        use_checkpoint=False, use_new_attention_order=False, resnet_two_cond=True, resnet_use_zero_module=True,
        latent_net_conf=None, resnet_cond_channels=None).make_model()


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (avx512_bf16 or AMX), where bf16 autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_images(path: Path, count: int, size: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``count`` real fundus images (RetinaMNIST's training split, grey, resized to ``size``) in [-1, 1],
    so that the losses compared are on images a DiffAE learns; uniform noise when the file is absent."""
    g = torch.Generator().manual_seed(seed)
    if not path.is_file():
        return torch.rand(count, 1, size, size, generator=g) * 2 - 1, "uniform noise (no RetinaMNIST file)"
    with np.load(path) as arrays:
        images = torch.from_numpy(arrays["train_images"].astype(np.float32) / 255).mean(-1, keepdim=True)
    chosen = torch.randperm(len(images), generator=g)[:count]
    images = F.interpolate(images[chosen].permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False)
    return images * 2 - 1, f"{count} RetinaMNIST training images, grey, {size} x {size}"


def compare(path: Path, steps: int, rounds: int, batch: int, precision: str, channels_last: bool, images: Path) -> None:
    """Train ours and the official autoencoder on the same batches, interleaved, and print images/s and losses.

    Contestants: ours with ``precision`` (bf16 autocast where the CPU has native bf16) and channels-last
    memory; the official model as it trains on a CPU (fp32); and, so that nobody has to guess how much of the
    difference is autocast alone, the official model under the same autocast."""
    cfg = configs.load([str(ROOT / "config/paper.yaml")])
    d, size = cfg["diffae"], cfg["spider"]["prepare"]["image_size"]
    device = torch.device("cpu")
    if precision == "auto":
        precision = "bf16" if cpu_has_bf16() else "fp32"
    torch.manual_seed(0)
    ours = DiffAE(1, size, d)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    models = {f"lvdr ({precision}{', channels-last' if channels_last else ''})": (ours.to(memory_format=memory), precision, memory),
              "official (fp32)": (official_model(path, size, 1), "fp32", torch.contiguous_format)}
    if precision != "fp32":
        models[f"official ({precision})"] = (official_model(path, size, 1), precision, torch.contiguous_format)
    forward = lambda name, m, x_t, t, x0: (m(x_t, t, x0) if name.startswith("lvdr")  # noqa: E731
                                           else m(x=x_t, t=t, x_start=x0).pred)
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=d["train"]["lr"]) for k, (m, _, _) in models.items()}
    scheduler = DDPMScheduler(num_train_timesteps=d["timesteps"], schedule=d["beta_schedule"])
    for name, (m, _, _) in models.items():
        print(f"{name:28s} {sum(p.numel() for p in m.parameters()) / 1e6:.1f}M parameters")
    data, what = training_images(images, steps * batch, size)
    print(f"data: {what}; {rounds} timed rounds of the same {steps} batches of {batch} after one warm-up round")
    g = torch.Generator().manual_seed(0)
    batches = [(data[i * batch:(i + 1) * batch], torch.randn(batch, 1, size, size, generator=g),
                torch.randint(0, d["timesteps"], (batch,), generator=g)) for i in range(steps)]
    seconds = {k: 0.0 for k in models}
    losses = {k: [] for k in models}
    for r in range(rounds + 1):  # round 0 warms up (allocations, kernels) and is not timed; all train on it
        for name, (m, prec, memory) in models.items():
            m.train()
            start = time.perf_counter()
            for x0, noise, t in batches:
                x0, noise = x0.contiguous(memory_format=memory), noise.contiguous(memory_format=memory)
                with autocast(device, prec):
                    prediction = forward(name, m, scheduler.add_noise(x0, noise, t), t, x0)
                loss = F.mse_loss(prediction.float(), noise)
                optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[name].step()
                losses[name].append(loss.item())
            if r:
                seconds[name] += time.perf_counter() - start
    rates = {k: rounds * steps * batch / s for k, s in seconds.items()}
    for name, rate in rates.items():
        print(f"{name:28s} train {rate:.2f} img/s; mean loss over the last round (step {rounds * steps + 1}-"
              f"{(rounds + 1) * steps}) {np.mean(losses[name][-steps:]):.4f}")
    names = list(models)
    print(f"{names[0]} / {names[1]}: {rates[names[0]] / rates[names[1]]:.2f}x")
    if len(names) > 2:
        print(f"{names[0]} / {names[2]}: {rates[names[0]] / rates[names[2]]:.2f}x (the same autocast on both)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=[str(ROOT / "config/config.yaml"), str(ROOT / "config/paper.yaml")])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per config")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's)")
    parser.add_argument("--compare", type=Path, metavar="PATH", help="a local copy of github.com/phizaz/diffae: "
                                                                   "time ours against it at the paper's setting (CPU)")
    parser.add_argument("--rounds", type=int, default=2, help="with --compare: interleaved timed rounds (default 2)")
    parser.add_argument("--batch", type=int, default=8, help="with --compare: batch size (default 8)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="with --compare: our autocast (auto: bf16 where the CPU has native bf16, else fp32)")
    parser.add_argument("--no-channels-last", action="store_true", help="with --compare: keep our tensors contiguous")
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared/data/retinamnist/retinamnist.npz",
                        help="with --compare: RetinaMNIST's .npz, whose training images both models learn")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.compare:
        compare(args.compare, args.steps, args.rounds, args.batch, args.precision, not args.no_channels_last, args.images)
        return
    for path in args.configs:
        cfg = configs.load([path])
        device = pick_device(args.device or cfg["device"])
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        r = bench(cfg, device, args.steps)
        print(f"{Path(path).name:12s} on {name}: {r['params_M']:.2f}M params, {r['image']}x{r['image']}, batch {r['batch']}: "
              f"train {r['train_img_s']:.1f} img/s, encode {r['encode_img_s']:.1f} img/s")


if __name__ == "__main__":
    main()
