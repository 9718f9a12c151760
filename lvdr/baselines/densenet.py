"""DenseNet121 slice baseline (paper Appendix B): trained from scratch on single slices with their
sequence's label, slice probabilities averaged per sequence.

Graded datasets use a 5-way head with the paper's ordinal loss (eq. 2), so the baseline is
comparable with LVDR; binary datasets a 2-way head. Class-weighted losses counter imbalance.
Augmentation is MONAI's (small rotations, intensity noise and scaling) plus left-right flips
only where anatomy allows them. Early stopping on the validation loss (or, as MedMNIST selects,
its AUC) keeps the best weights; a checkpoint at every evaluation lets a killed run resume.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.networks.nets import DenseNet121
from monai.transforms import Compose, RandFlip, RandGaussianNoise, RandRotate, RandScaleIntensity
from tqdm import tqdm

from lvdr.data import Prepared, load_prepared, to_model_range
from lvdr.distributed import Parallel, global_batch
from lvdr.errors import DataError
from lvdr.evaluate.metrics import point_metrics
from lvdr.losses import class_weights, cross_entropy, ordinal_loss
from lvdr.predictions import aggregate_slices, write_predictions
from lvdr.training import (EMA, Checkpoints, MixedPrecision, adamw, config_hash, lr_factor, model_signature,
                           pick_device, save_torch, seed_step, set_lr, write_curve)

log = logging.getLogger(__name__)

# Left-right flips keep the label of an axial brain slice or a fundus image; a sagittal spine
# slice flipped front-to-back or top-to-bottom is no longer anatomy.
FLIP_ALLOWED = {"spider": False, "brats": True, "retinamnist": True}


def augmentation(dataset: str) -> Compose:
    steps = [
        RandRotate(range_x=np.deg2rad(10), prob=0.5, keep_size=True, padding_mode="zeros"),
        RandScaleIntensity(factors=0.1, prob=0.5),
        RandGaussianNoise(prob=0.5, std=0.02),
    ]
    if FLIP_ALLOWED.get(dataset, False):
        steps.append(RandFlip(prob=0.5, spatial_axis=1))
    return Compose(steps)


MIN_SIZE = 32  # DenseNet121 halves the image five times; smaller slices are upsampled first


NORMS = {"batch": "batch", "group": ("group", {"num_groups": 8})}  # every DenseNet121 width is a multiple of 32


def build(in_channels: int, num_classes: int, size: int, norm: str = "batch") -> torch.nn.Module:
    net = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, norm=NORMS[norm])
    if size >= MIN_SIZE:
        return net
    log.info("slices of %d px are upsampled to %d px for DenseNet121", size, MIN_SIZE)
    return torch.nn.Sequential(torch.nn.Upsample(size=(MIN_SIZE, MIN_SIZE), mode="bilinear", align_corners=False), net)


def make_loss(task: str, weights: torch.Tensor, alpha: float):
    if task == "ordinal":
        return lambda logits, y: ordinal_loss(logits, y, alpha, weights)
    return lambda logits, y: cross_entropy(logits, y, weights)


@torch.no_grad()
def slice_probabilities(model, slices: np.ndarray, device, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(slices), batch_size):
        out.append(model(to_model_range(slices[start:start + batch_size]).to(device)).float().softmax(1).cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def validation_loss(model, images, labels, loss_fn, device, batch_size: int = 256) -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = to_model_range(images[start:start + batch_size]).to(device)
        y = torch.as_tensor(labels[start:start + batch_size], device=device)
        total += loss_fn(model(x).float(), y).item() * len(x)
    return total / len(images)


def augmented(augment: Compose, image: np.ndarray, seed: int) -> torch.Tensor:
    """One training slice through the augmentation, with its own seed (the same in whichever process draws it).

    MONAI's metadata tracking is off meanwhile: a slice has no affine to keep, the transforms run in half the
    time, and they return a plain tensor. A MetaTensor in the batch sent every operation of DenseNet121's
    forward pass through MONAI's __torch_function__: a SPIDER job took 75 s with it, 63 s without."""
    augment.set_random_state(seed=int(seed))
    tracking = get_track_meta()
    set_track_meta(False)
    try:
        return augment(torch.from_numpy(np.asarray(image, np.float32)))
    finally:
        set_track_meta(tracking)


def validation(model, data: Prepared, rows: np.ndarray, images: np.ndarray, labels: np.ndarray, loss_fn, select: str,
               device) -> dict:
    """The validation loss and, when it selects, the validation AUC (``images``: the slices of ``rows``)."""
    row = {"val_loss": validation_loss(model, images, labels, loss_fn, device)}
    if select == "auc":
        row["val_auc"] = validation_auc(model, data, rows, device)
    return row


def validation_auc(model, data: Prepared, rows: np.ndarray, device) -> float:
    """MedMNIST's selection score on the validation sequences: macro one-vs-rest AUC over the grades
    (graded tasks; the binary AUC when a grade is missing from validation), else the binary AUC."""
    frame = aggregate_slices(data.table.iloc[rows], slice_probabilities(model, data.slices[rows], device))
    scores = point_metrics(frame, data.meta["task"], data.num_classes)
    auc = scores["auc_ovr"] if scores["auc_ovr"] is not None and not np.isnan(scores["auc_ovr"]) else scores["auc_bin"]
    return float(auc) if not np.isnan(auc) else 0.5


def train(cfg: dict, prepared_dir: str | Path, out_dir: str | Path, predictions_path: str | Path, seed: int,
          device_name: str = "auto") -> Path:
    out_dir = Path(out_dir)
    data: Prepared = load_prepared(prepared_dir)
    task, num_classes = data.meta["task"], data.num_classes
    train_rows, val_rows = np.sort(data.rows("train")), np.sort(data.rows("val"))
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DataError(f"{prepared_dir}: DenseNet121 needs slices in both the train and the val split")
    grades = data.table.grade.to_numpy()
    images, labels = data.slices[train_rows], grades[train_rows]
    val_images, val_labels = data.slices[val_rows], grades[val_rows]
    parallel = Parallel(pick_device(device_name))
    device = parallel.device
    share = parallel.share(cfg["batch_size"], "densenet.batch_size")
    torch.manual_seed(seed)
    # channels-last, the layout the convolutions prefer: a SPIDER job took 54 s instead of 63 s here (on a GPU it is
    # what tensor cores read); the same arithmetic, summed in another order
    model = build(images.shape[1], num_classes, images.shape[-1], cfg["norm"]).to(device, memory_format=torch.channels_last)
    if parallel.world > 1 and cfg["norm"] == "batch":
        if device.type == "cuda":  # batch statistics over the global batch, as in one process
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.warning("DenseNet121 on %d CPU processes: BatchNorm statistics are per process (PyTorch has no "
                        "SyncBatchNorm on the CPU); densenet.norm: group uses none", parallel.world)
    trained = parallel.wrap(model)
    optimizer = adamw(model.parameters(), cfg["lr"], cfg["weight_decay"])
    weights = class_weights(labels, num_classes).to(device) if cfg["class_weights"] else None
    loss_fn = make_loss(task, weights, cfg["ordinal_alpha"])
    augment = augmentation(data.meta["dataset"])
    checkpoints = Checkpoints(out_dir / "checkpoints", config_hash({**cfg, "seed": seed, "shape": images.shape,
                                                                          "model": model_signature(model)}))
    state = checkpoints.load() or {"step": 0, "curve": [], "best_score": float("inf"), "best_step": 0,
                                   "best_model": None, "bad_evals": 0}
    ema = EMA(model, cfg["ema_decay"]) if cfg["ema_decay"] > 0 else None
    precision = MixedPrecision(device, cfg["precision"])
    if state["step"]:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        precision.load_state_dict(state.get("scaler"))
        if ema is not None:
            ema.load_state_dict(state["ema"])
    evaluated = ema.model if ema is not None else model  # what is validated and kept
    log.info("DenseNet121: %d training slices, %d validation slices, %s task, class weights %s, on %s",
             len(images), len(val_images), task, "off" if weights is None else [round(float(w), 2) for w in weights], device)
    bar = tqdm(total=cfg["max_steps"], initial=state["step"], desc="train densenet121", unit="step", mininterval=1.0,
               disable=not parallel.main)
    while state["step"] < cfg["max_steps"] and state["bad_evals"] < cfg["patience"]:
        seed_step(seed, state["step"])  # the global batch's draws, the same in every process; each computes its share
        index = np.sort(np.random.randint(0, len(images), cfg["batch_size"]))
        augment_seeds = np.random.randint(2**31, size=cfg["batch_size"])  # one per slice: any process can augment it
        x = torch.stack([augmented(augment, images[i], s) for i, s in zip(index[share], augment_seeds[share])]) * 2 - 1
        y = torch.as_tensor(labels[index[share]], device=device)
        model.train()
        with precision.autocast():
            logits = trained(x.to(device))
        with global_batch():
            loss = loss_fn(logits.float(), y)
        set_lr(optimizer, cfg["lr"] * lr_factor(state["step"], cfg["max_steps"], 0.0, cfg["schedule"]))
        optimizer.zero_grad(set_to_none=True)
        precision.step(loss, optimizer, model.parameters(), cfg["grad_clip"])
        if ema is not None:
            ema.update(model)
        state["step"] += 1
        row = {"step": state["step"], **parallel.average({"loss": loss.item()})}
        if state["step"] % cfg["eval_every"] == 0 or state["step"] == cfg["max_steps"]:
            row.update(parallel.from_main(lambda: validation(evaluated, data, val_rows, val_images, val_labels, loss_fn, cfg["select"],
                                                                 device)))
            score = -row["val_auc"] if cfg["select"] == "auc" else row["val_loss"]  # lower is better
            if score < state["best_score"]:
                state.update(best_score=score, best_step=state["step"], bad_evals=0,
                             best_model=copy.deepcopy(evaluated.state_dict()))
            else:
                state["bad_evals"] += 1
            bar.set_postfix(val_loss=f"{row['val_loss']:.4f}", best=state["best_step"])
            state["curve"].append(row)
            if parallel.main:
                checkpoints.save({**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "ema": None if ema is None else ema.state_dict(), "scaler": precision.state_dict()})
        else:
            state["curve"].append(row)
        bar.update(1)
    bar.close()
    parallel.close()
    if not parallel.main:  # rank 0 writes the outputs
        return out_dir / "model.pt"
    stopped = "early stop" if state["bad_evals"] >= cfg["patience"] else "step limit"
    log.info("DenseNet121 stopped at step %d (%s); best validation %s %.4f at step %d", state["step"], stopped,
             cfg["select"], abs(state["best_score"]), state["best_step"])
    model.load_state_dict(state["best_model"])
    write_curve(out_dir / "curve.csv", state["curve"])
    save_torch({"config": cfg, "state_dict": model.state_dict(), "best_step": state["best_step"],
                "in_channels": images.shape[1], "num_classes": num_classes}, out_dir / "model.pt")
    probs = slice_probabilities(model, data.slices, device)
    write_predictions(predictions_path, aggregate_slices(data.table, probs).assign(seed=seed))
    return out_dir / "model.pt"
