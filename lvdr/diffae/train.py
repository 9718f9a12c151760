"""Stage 1: train the diffusion autoencoder on the training split's slices.

A fixed number of steps; EMA weights; gradient clipping; mixed precision on GPU; a
checkpoint every ``checkpoint_every`` steps from which a killed run resumes exactly.
Writes ``model.pt`` (EMA weights and the config that built them), ``curve.csv`` and
``reconstructions.npz`` (test slices, their DDIM reconstruction through (z, x_T), and a
decode of z from fresh noise).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler
from tqdm import tqdm

from lvdr.data import Prepared, load_prepared, to_model_range
from lvdr.diffae.model import DiffAE
from lvdr.distributed import Parallel, batch_mean, global_batch
from lvdr.diffae.sampling import decode, encode_noise
from lvdr.errors import DataError
from lvdr.files import atomic_path
from lvdr.training import (EMA, Checkpoints, MixedPrecision, adamw, config_hash, lr_factor, model_signature,
                           pick_device, save_torch, seed_step, set_lr, write_curve)

log = logging.getLogger(__name__)


def build(cfg: dict, in_channels: int, image_size: int) -> DiffAE:
    return DiffAE(in_channels, image_size, cfg)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[DiffAE, dict]:
    """The trained DiffAE (EMA weights, eval mode) and the config it was built with."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no trained DiffAE (run `lvdr train-diffae` first)")
    saved = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only: runs no code
    return from_saved(saved, saved["state_dict"], device), saved["config"]


def from_saved(meta: dict, state_dict: dict, device: torch.device | str = "cpu") -> DiffAE:
    """The DiffAE that ``meta`` (config, in_channels, image_size) describes, with these weights, in eval mode."""
    model = build(meta["config"], meta["in_channels"], meta["image_size"])
    model.load_state_dict(state_dict)
    return model.to(device).eval()


def train(cfg: dict, prepared_dir: str | Path, out_dir: str | Path, seed: int, device_name: str = "auto") -> Path:
    out_dir = Path(out_dir)
    data = load_prepared(prepared_dir)
    tcfg = cfg["train"]
    train_rows = data.rows("train")
    if len(train_rows) == 0:
        raise DataError(f"{prepared_dir}: no slices in the train split")
    parallel = Parallel(pick_device(device_name))
    device = parallel.device
    share = parallel.share(tcfg["batch_size"], "diffae.train.batch_size")
    images = data.slices[np.sort(train_rows)]  # float16 in memory: the training set is read once
    _, in_channels, size, _ = images.shape
    torch.manual_seed(seed)
    model = build(cfg, in_channels, size).to(device)
    if cfg["unit_z_init"]:  # before the EMA copy and DDP's broadcast; every process picks the same slices
        spread = np.linspace(0, len(images) - 1, min(64, len(images))).astype(int)
        factor = model.encoder.init_unit_z(to_model_range(images[spread]).to(device))
        log.info("z initialised at unit scale: the encoder's last layer scaled by %.2f", factor)
    trained = parallel.wrap(model)
    ema = EMA(model, tcfg["ema_decay"])
    optimizer = adamw(model.parameters(), tcfg["lr"], tcfg["weight_decay"])
    scheduler = DDPMScheduler(num_train_timesteps=cfg["timesteps"], schedule=cfg["beta_schedule"])
    checkpoints = Checkpoints(out_dir / "checkpoints", config_hash({k: v for k, v in cfg.items() if k != "train"}
                                                                  | {"train": {k: v for k, v in tcfg.items() if k != "steps"},
                                                                     "seed": seed, "shape": images.shape,
                                                                     "model": model_signature(model)}))
    precision = MixedPrecision(device, tcfg["precision"])
    step, curve = 0, []
    state = checkpoints.load()
    if state:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        precision.load_state_dict(state.get("scaler"))
        step, curve = state["step"], state["curve"]
    n_params = sum(p.numel() for p in model.parameters())
    log.info("DiffAE: %.2fM parameters, %d training slices of %s, %d steps of %d on %s",
             n_params / 1e6, len(images), images.shape[1:], tcfg["steps"], tcfg["batch_size"], device)
    model.train()
    bar = tqdm(total=tcfg["steps"], initial=step, desc="train diffae", unit="step", mininterval=1.0, disable=not parallel.main)
    started, running = time.perf_counter(), None
    while step < tcfg["steps"]:
        seed_step(seed, step)  # the global batch's draws, the same in every process; each computes its share
        lr = tcfg["lr"] * lr_factor(step, tcfg["steps"], tcfg["warmup_fraction"], tcfg["schedule"])
        set_lr(optimizer, lr)
        index = np.sort(np.random.randint(0, len(images), tcfg["batch_size"]))
        x0 = to_model_range(images[index[share]]).to(device)
        noise = torch.randn((tcfg["batch_size"], *x0.shape[1:]), device=device)[share]
        t = torch.randint(0, cfg["timesteps"], (tcfg["batch_size"],), device=device)[share]
        with precision.autocast():
            prediction = trained(scheduler.add_noise(x0, noise, t), t, x0)
        with global_batch():
            loss = batch_mean(F.mse_loss(prediction.float(), noise, reduction="none"))
        optimizer.zero_grad(set_to_none=True)
        precision.step(loss, optimizer, model.parameters(), tcfg["grad_clip"])
        ema.update(model)
        step += 1
        value = parallel.average({"loss": loss.item()})["loss"]
        running = value if running is None else 0.95 * running + 0.05 * value
        curve.append({"step": step, "loss": value, "lr": lr, "images_seen": step * tcfg["batch_size"]})
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        if parallel.main and (step % tcfg["checkpoint_every"] == 0 or step == tcfg["steps"]):
            checkpoints.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                              "scaler": precision.state_dict(), "step": step, "curve": curve})
    bar.close()
    parallel.close()
    if not parallel.main:  # rank 0 writes the outputs
        return out_dir / "model.pt"
    elapsed = time.perf_counter() - started
    if curve:
        first, last = np.mean([r["loss"] for r in curve[:20]]), np.mean([r["loss"] for r in curve[-20:]])
        log.info("DiffAE trained to step %d (%.0f s this run): loss %.4f -> %.4f", step, elapsed, first, last)
    write_curve(out_dir / "curve.csv", curve)
    save_torch({"config": cfg, "in_channels": in_channels, "image_size": size, "step": step,
                "state_dict": ema.model.state_dict()}, out_dir / "model.pt")
    reconstruct(ema.model, data, cfg, out_dir / "reconstructions.npz", seed, device)
    return out_dir / "model.pt"


@torch.no_grad()
def reconstruct(model: DiffAE, data: Prepared, cfg: dict, path: Path, seed: int, device) -> None:
    """Central test slices, their (z, x_T) DDIM reconstruction, and z decoded from fresh noise."""
    sequences = data.table[data.table.split == "test"].groupby("seq_id", sort=False).row
    picks = [rows.iloc[len(rows) // 2] for _, rows in sequences]
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(picks, min(cfg["num_recon"], len(picks)), replace=False))
    x0 = to_model_range(data.slices[picks]).to(device)
    model.eval()
    z, _ = model.encode(x0)
    x_t = encode_noise(model.decoder, x0, z, cfg, cfg["ddim_steps"])
    recon = decode(model.decoder, x_t, z, cfg, cfg["ddim_steps"])
    generator = torch.Generator().manual_seed(seed)
    fresh = decode(model.decoder, torch.randn(x0.shape, generator=generator).to(device), z, cfg, cfg["ddim_steps"], clip=True)
    arrays = {name: ((a.cpu().numpy() + 1) / 2).clip(0, 1) for name, a in
              (("original", x0), ("ddim", recon), ("fresh_noise", fresh))}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, rows=picks, **arrays)
    mse = float(np.mean((arrays["original"] - arrays["ddim"]) ** 2))
    log.info("reconstructions of %d test slices: DDIM(%d steps) MSE %.4f", len(picks), cfg["ddim_steps"], mse)
