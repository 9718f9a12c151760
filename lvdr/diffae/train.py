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
from dataclasses import dataclass, field
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


@dataclass
class Run:
    """One encoder-decoder in training: its seed (which draws its weights and every batch), weights, EMA,
    optimiser, precision state and loss curve."""

    seed: int
    model: DiffAE
    trained: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    ema: EMA
    optimizer: torch.optim.Optimizer
    precision: MixedPrecision
    step: int = 0
    curve: list = field(default_factory=list)
    running: float | None = None


def choose_init(seeds: list[int], start, advance, data: Prepared, steps: int, parallel: Parallel, seed: int) -> Run:
    """Train an init per seed for ``steps`` steps and keep the one whose EMA latents carry the grade best on the
    training split (``lvdr.diffae.probe``); the others are dropped. Ties, and a split too small to probe,
    keep the earliest."""
    from lvdr.diffae.probe import grade_error, sequence_means

    best, best_error = None, None
    for i, init_seed in enumerate(seeds):
        run = start(init_seed)
        with tqdm(total=steps, desc=f"diffae init {i + 1}/{len(seeds)}", unit="step", mininterval=1.0,
                  disable=not parallel.main) as bar:
            advance(run, steps, bar)
        error = grade_error(*sequence_means(run.ema.model, data, parallel.device), seed)
        if error is not None:
            error = parallel.average({"error": error})["error"]  # every process keeps the same init
        log.info("DiffAE init %d of %d (seed %d) after %d steps: training-split grade probe MAE %s", i + 1, len(seeds),
                 init_seed, steps, "n/a (too few training patients or grades)" if error is None else f"{error:.3f}")
        if best is None or (error is not None and (best_error is None or error < best_error)):
            best, best_error = run, error
    log.info("DiffAE: kept the init with seed %d%s", best.seed, "" if best_error is not None else
             " (the first: the training split is too small to probe)")
    return best


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
    scheduler = DDPMScheduler(num_train_timesteps=cfg["timesteps"], schedule=cfg["beta_schedule"])

    def start(init_seed: int) -> Run:
        """A fresh encoder-decoder from ``init_seed``, with its EMA, optimiser and precision state."""
        torch.manual_seed(init_seed)
        # channels-last memory, as the field trains convolutional nets: a demo step 12% quicker on one CPU thread
        model = build(cfg, in_channels, size).to(device, memory_format=torch.channels_last)
        if cfg["unit_z_init"]:  # before the EMA copy and DDP's broadcast; every process picks the same slices
            spread = np.linspace(0, len(images) - 1, min(64, len(images))).astype(int)
            factor = model.encoder.init_unit_z(to_model_range(images[spread]).to(device))
            log.info("z initialised at unit scale: the encoder's last layer scaled by %.2f", factor)
        return Run(init_seed, model, parallel.wrap(model), EMA(model, tcfg["ema_decay"]),
                   adamw(model.parameters(), tcfg["lr"], tcfg["weight_decay"]), MixedPrecision(device, tcfg["precision"]))

    def advance(run: Run, until: int, bar, checkpoints: Checkpoints | None = None) -> None:
        """Train ``run`` to step ``until``; its draws depend only on its seed and the step."""
        run.model.train()
        while run.step < until:
            seed_step(run.seed, run.step)  # the global batch's draws, the same in every process; each computes its share
            lr = tcfg["lr"] * lr_factor(run.step, tcfg["steps"], tcfg["warmup_fraction"], tcfg["schedule"])
            set_lr(run.optimizer, lr)
            index = np.sort(np.random.randint(0, len(images), tcfg["batch_size"]))
            x0 = to_model_range(images[index[share]]).to(device).contiguous(memory_format=torch.channels_last)
            noise = torch.randn((tcfg["batch_size"], *x0.shape[1:]), device=device)[share]
            t = torch.randint(0, cfg["timesteps"], (tcfg["batch_size"],), device=device)[share]
            with run.precision.autocast():
                prediction = run.trained(scheduler.add_noise(x0, noise, t), t, x0)
            with global_batch():
                loss = batch_mean(F.mse_loss(prediction.float(), noise, reduction="none"))
            run.optimizer.zero_grad(set_to_none=True)
            run.precision.step(loss, run.optimizer, run.model.parameters(), tcfg["grad_clip"])
            run.ema.update(run.model)
            run.step += 1
            value = parallel.average({"loss": loss.item()})["loss"]
            run.running = value if run.running is None else 0.95 * run.running + 0.05 * value
            run.curve.append({"step": run.step, "loss": value, "lr": lr, "images_seen": run.step * tcfg["batch_size"]})
            bar.update(1)
            bar.set_postfix(loss=f"{run.running:.4f}")
            if checkpoints and parallel.main and (run.step % tcfg["checkpoint_every"] == 0 or run.step == tcfg["steps"]):
                checkpoints.save({"model": run.model.state_dict(), "ema": run.ema.state_dict(),
                                  "optimizer": run.optimizer.state_dict(), "scaler": run.precision.state_dict(),
                                  "step": run.step, "curve": run.curve, "init_seed": run.seed})

    # init i starts from seed + 1000 i (init 0 is the run a single init trains): far from the seeds
    # seed + 1, seed + 2, ... that the pipeline gives its other trainings
    seeds = [seed + 1000 * i for i in range(cfg["inits"])]
    blueprint = build(cfg, in_channels, size)
    signature, n_params = model_signature(blueprint), sum(p.numel() for p in blueprint.parameters())
    checkpoints = Checkpoints(out_dir / "checkpoints", config_hash({k: v for k, v in cfg.items() if k != "train"}
                                                                  | {"train": {k: v for k, v in tcfg.items() if k != "steps"},
                                                                     "seed": seed, "shape": images.shape,
                                                                     "model": signature}))
    state = checkpoints.load()
    log.info("DiffAE: %.2fM parameters, %d training slices of %s, %d steps of %d on %s", n_params / 1e6,
             len(images), images.shape[1:], tcfg["steps"], tcfg["batch_size"], device)
    started = time.perf_counter()
    if state:
        run = start(state.get("init_seed", seed))
        run.model.load_state_dict(state["model"])
        run.ema.load_state_dict(state["ema"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.precision.load_state_dict(state.get("scaler"))
        run.step, run.curve = state["step"], state["curve"]
    elif len(seeds) == 1:
        run = start(seed)
    else:
        run = choose_init(seeds, start, advance, data, min(cfg["init_probe_steps"], tcfg["steps"]), parallel, seed)
    bar = tqdm(total=tcfg["steps"], initial=run.step, desc="train diffae", unit="step", mininterval=1.0, disable=not parallel.main)
    advance(run, tcfg["steps"], bar, checkpoints)
    model, ema, step, curve = run.model, run.ema, run.step, run.curve
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
