"""Stage 2: train the PRM on cached patch tokens, with the paper's four losses (eq. 4).

L = L_recon + l_traj L_traj + l_ord L_ord + l_cls L_cls, where L_recon is the stage-1 decoder's
noise-prediction loss conditioned on z_sem at K random slices of the sequence, L_traj the mean
cosine distance of P_t to P_T, L_ord the ordinal loss (graded datasets) and L_cls binary CE or
focal loss (binary datasets), class-weighted by default. Beyond the paper, ``lambda_step`` adds
L_step, the same grading loss on every intermediate state z_t: the belief after each slice should be
the best guess from the slices read so far, so the memory has a reason to move on a slice that
changes the guess and to hold still on one that does not. Off by default: on the demo BraTS it
turned the step size towards the edema on one draw and not on another (README).

A fixed number of steps under AdamW with a linear warm-up and cosine decay; an EMA of the weights
is what gets validated and saved. With ``train.flip_depth`` a share of each batch is read from its
other end (3D augmentation's flip along the slice axis): evidence early in a sequence, which the
memory must then carry to its end, becomes as common as evidence late in it. The PRM standardises
its inputs (patch tokens and z) with the training slices' per-channel mean and sd, kept in the
model, so grading a new scan later applies exactly the same scaling. The kept checkpoint is the
best on validation MAE (graded) or AUC (binary) as in the paper, the lowest validation loss, or the
last (``prm.train.select``); a killed run resumes from its last checkpoint. For binary tasks the
decision threshold on p_bin is chosen on validation (``prm.binary_threshold``) and stored with the
model and in the predictions.
Writes ``model.pt``, ``curve.csv``, the predictions and ``trajectories.npz`` (every sequence's
P_t, z_t and the slice each step consumed; ragged arrays concatenated with offsets).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lvdr.data import Prepared, load_latents, load_prepared, to_model_range
from lvdr.distributed import Parallel, batch_mean, batch_ratio, global_batch
from lvdr.errors import ConfigError, DataError
from lvdr.evaluate.metrics import selection_score
from lvdr.files import atomic_path
from lvdr.losses import class_weights, cross_entropy, focal_loss, ordinal_loss
from lvdr.predictions import apply_threshold, choose_threshold, from_sequence_probs, write_predictions
from lvdr.prm.model import PRM
from lvdr.training import (EMA, Checkpoints, MixedPrecision, adamw, config_hash, lr_factor, model_signature,
                           pick_device, save_torch, seed_step, set_lr, write_curve)

log = logging.getLogger(__name__)


def even_subsample(n: int, t_max: int) -> np.ndarray:
    """Indices of at most t_max slices spread evenly along depth, in order, first and last kept."""
    if n <= t_max:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, t_max).round().astype(int))


@dataclass
class Sequence:
    seq_id: str
    split: str
    grade: int
    label_bin: int
    rows: np.ndarray  # slice-table rows consumed, in order
    depth: np.ndarray  # their positions in the full sequence


def sequences(data: Prepared, t_max: int) -> list[Sequence]:
    out = []
    for seq_id, group in data.table.sort_values(["seq_id", "slice_pos"]).groupby("seq_id", sort=False):
        keep = even_subsample(len(group), t_max)
        first = group.iloc[0]
        out.append(Sequence(seq_id, first.split, int(first.grade), int(first.label_bin),
                            group.row.to_numpy()[keep], group.slice_pos.to_numpy()[keep]))
    order = {s: i for i, s in enumerate(data.table.drop_duplicates("seq_id").seq_id)}  # table order
    return sorted(out, key=lambda s: order[s.seq_id])


def flip_depth(s: Sequence) -> Sequence:
    """The same sequence read from its other end, its depths mirrored within their span: a scan flipped
    along its slice axis shows the same disc or slab, so it keeps its label."""
    mirrored = s.depth.min() + s.depth.max() - s.depth
    return Sequence(s.seq_id, s.split, s.grade, s.label_bin, s.rows[::-1].copy(), mirrored[::-1].copy())


def collate(batch: list[Sequence], features, device) -> dict:
    """The PRM's inputs for a batch, padded to its longest sequence: tokens (B, T, K, c), codes (B, T, d_z),
    depth (B, T), mask (B, T). ``features`` is the latent cache's (z, tokens), row-aligned with the slices."""
    z, tokens = features
    t = max(len(s.rows) for s in batch)
    x = np.zeros((len(batch), t, *tokens.shape[1:]), np.float32)
    codes = np.zeros((len(batch), t, z.shape[1]), np.float32)
    depth = np.zeros((len(batch), t), np.float32)
    mask = np.zeros((len(batch), t), bool)
    for i, s in enumerate(batch):
        x[i, :len(s.rows)] = tokens[s.rows]
        codes[i, :len(s.rows)] = z[s.rows]
        depth[i, :len(s.rows)] = s.depth
        mask[i, :len(s.rows)] = True
    return {name: torch.from_numpy(a).to(device) for name, a in
            (("tokens", x), ("codes", codes), ("depth", depth), ("mask", mask))}


def channel_statistics(array: np.ndarray, rows: np.ndarray, chunk: int = 1024) -> torch.Tensor:
    """Mean and sd (2, c) of the last axis of array[rows] over every other axis, read chunk by chunk (the
    memory-mapped token cache of a real dataset does not fit in memory) and summed in float64."""
    total, squares, count = 0.0, 0.0, 0
    for start in range(0, len(rows), chunk):
        block = np.asarray(array[rows[start:start + chunk]], np.float64).reshape(-1, array.shape[-1])
        total, squares, count = total + block.sum(0), squares + (block ** 2).sum(0), count + len(block)
    mean = total / count
    sd = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return torch.as_tensor(np.stack([mean, np.maximum(sd, 1e-6)]), dtype=torch.float32)


def trajectory_loss(P: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Paper eq. 3: mean over t < T of 1 - cos(P_t, P_T), per sequence (0 for T = 1), averaged."""
    lengths = mask.sum(1)
    last = P[torch.arange(len(P)), lengths - 1]
    distance = 1 - F.cosine_similarity(P, last[:, None, :], dim=-1)
    earlier = mask & (torch.arange(P.shape[1], device=P.device)[None] < (lengths - 1)[:, None])
    per_sequence = (distance * earlier).sum(1) / (lengths - 1).clamp(min=1)
    return batch_mean(per_sequence)


def movement_loss(P: torch.Tensor, mask: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """L_move: the mean step length ||P_t - P_{t-1}|| over each sequence's steps t = 1..T, from the learned
    start P_0 = ``start`` (B, d), averaged over sequences. Not squared, so that, like an L1 penalty, it
    prefers a few large steps to many small ones: the memory moves where a slice changes what it must
    hold and stays put elsewhere. The first step counts too: left free, every sequence jumped away from
    P_0 on its first slice by about the same amount whatever it showed, and ||P_t|| told the seed more
    than the grade (README, "The first step pays too")."""
    P, mask = torch.cat([start[:, None], P], 1), torch.cat([mask[:, :1], mask], 1)
    real = mask[:, 1:]
    steps = torch.linalg.vector_norm(P[:, 1:] - P[:, :-1], dim=-1)
    per_sequence = (steps * real).sum(1) / real.sum(1).clamp(min=1)
    return batch_mean(per_sequence)


def recon_loss(decoder, scheduler, z_sem, batch: list[Sequence], slices: np.ndarray, k: int, device,
               share: slice = slice(None), fraction: float = 1.0) -> torch.Tensor:
    """Noise-prediction loss of the decoder conditioned on z_sem at k random slices of each sequence, or of a
    random ``fraction`` of the sequences (the same expectation, for fewer decoder passes: half the demo's
    PRM step is this pass). ``batch`` is the global batch, whose sequences, slices, noise and timesteps every
    process draws alike; ``z_sem`` holds this process's ``share`` of it, whose slices alone it decodes."""
    picks, owners = [], []
    decoded = range(len(batch))  # the batch's sequences whose slices are decoded
    if fraction < 1:
        decoded = np.sort(np.random.choice(len(batch), max(1, round(fraction * len(batch))), replace=False))
    for i in decoded:
        s = batch[i]
        chosen = np.random.choice(len(s.rows), size=min(k, len(s.rows)), replace=False)
        picks.extend(s.rows[np.sort(chosen)])
        owners.extend([i] * len(chosen))
    picks, owners = np.asarray(picks), np.asarray(owners)
    noise = torch.randn((len(picks), *slices.shape[1:]), device=device)
    t = torch.randint(0, scheduler.num_train_timesteps, (len(picks),), device=device)
    first, end, _ = share.indices(len(batch))
    mine = np.flatnonzero((owners >= first) & (owners < end))
    order = np.argsort(picks[mine])  # read the memory-mapped slices in row order
    x0 = to_model_range(slices[picks[mine][order]])[np.argsort(order)].to(device)
    local = torch.as_tensor(owners[mine] - first, device=device)
    mine = torch.as_tensor(mine)
    prediction = decoder(scheduler.add_noise(x0, noise[mine], t[mine]), t[mine], z_sem[local])
    return batch_mean(F.mse_loss(prediction.float(), noise[mine], reduction="none"))


def grading_loss(cfg: dict, task: str, logits: torch.Tensor, labels: torch.Tensor, weight=None) -> torch.Tensor:
    """L_ord (graded datasets) or L_cls (binary: cross-entropy or focal loss), optionally class-weighted."""
    if task == "ordinal":
        return ordinal_loss(logits, labels, cfg["ordinal_alpha"], weight)
    if cfg["binary_loss"] == "focal":
        return focal_loss(logits, labels, cfg["focal_gamma"], weight)
    return cross_entropy(logits, labels, weight)


def step_loss(cfg: dict, task: str, step_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
              weight=None) -> torch.Tensor:
    """L_step: the grading loss of every intermediate state z_t (t < T, real slices only), each against its
    sequence's label, each sequence weighing the same whatever its length (0 when no sequence has two slices)."""
    lengths = mask.sum(1)
    earlier = mask & (torch.arange(mask.shape[1], device=mask.device)[None] < (lengths - 1)[:, None])
    per_step = 1.0 / (lengths - 1).clamp(min=1)[:, None].expand_as(earlier)[earlier]
    logits, targets = step_logits[earlier].float(), labels[:, None].expand_as(earlier)[earlier]
    if task == "ordinal":
        loss = ordinal_loss(logits, targets, cfg["ordinal_alpha"], weight, reduction="none")
    elif cfg["binary_loss"] == "focal":
        loss = focal_loss(logits, targets, cfg["focal_gamma"], weight, reduction="none")
    else:
        loss = F.cross_entropy(logits, targets, weight=weight, reduction="none")
    scale = per_step * (1.0 if weight is None else weight[targets])
    return batch_ratio((loss * per_step).sum(), scale.sum())


def losses(cfg: dict, task: str, out: dict, labels: torch.Tensor, mask: torch.Tensor, recon, weight=None,
           traj_factor: float = 1.0) -> dict:
    terms = {"recon": recon, "traj": trajectory_loss(out["P"], mask),
             "ord" if task == "ordinal" else "cls": grading_loss(cfg, task, out["logits"].float(), labels, weight)}
    weights = {"recon": cfg["lambda_recon"], "traj": traj_factor * cfg["lambda_traj"], "ord": cfg["lambda_ord"],
               "cls": cfg["lambda_cls"], "step": cfg["lambda_step"], "move": traj_factor * cfg["lambda_move"]}
    if cfg["lambda_step"] > 0:
        terms["step"] = step_loss(cfg, task, out["step_logits"], labels, mask, weight)
    if cfg["lambda_move"] > 0:
        terms["move"] = movement_loss(out["P"], mask, out["P0"])
    terms["total"] = sum(weights[name] * value for name, value in terms.items())
    return terms


def validate(model: PRM, cfg: dict, task: str, seqs: list[Sequence], features, device) -> dict:
    """Validation MAE (graded) or AUC (binary), and the unweighted grading loss, of ``model``."""
    results = run_sequences(model, seqs, features, device, latents=False)
    probs = torch.as_tensor(np.stack([r["probs"] for r in results]))
    labels = torch.as_tensor([s.grade for s in seqs])
    loss = grading_loss(cfg, task, probs.clamp_min(1e-7).log(), labels).item()  # log-probabilities act as logits
    return {"val_score": selection_score(predictions_of(seqs, results), task), "val_loss": loss}


def improves(select: str, task: str, row: dict, best: float | None) -> tuple[bool, float]:
    """Is this validation the best so far under ``select``? Returns (better, its criterion value)."""
    if select == "last":
        return True, row["step"]
    if select == "val_loss":
        value, lower = row["val_loss"], True
    else:
        value, lower = row["val_score"], task == "ordinal"
    return best is None or (value < best if lower else value > best), value


@torch.no_grad()
def run_sequences(model: PRM, seqs: list[Sequence], features, device, batch_size: int = 64,
                  latents: bool = True) -> list[dict]:
    """Eval-mode outputs per sequence: class probabilities and, with ``latents``, its (unpadded) trajectory.
    ``features``: the latent cache's (z, tokens)."""
    model.eval()
    results = []
    for start in range(0, len(seqs), batch_size):
        batch = seqs[start:start + batch_size]
        out = model(**collate(batch, features, device), latents=latents)
        probs = out["logits"].float().softmax(1).cpu().numpy()
        for i, s in enumerate(batch):
            n = len(s.rows)
            results.append({"probs": probs[i]} if not latents else
                           {"probs": probs[i], "P": out["P"][i, :n].float().cpu().numpy(),
                            "z": out["z"][i, :n].float().cpu().numpy()})
    return results


def predictions_of(seqs: list[Sequence], results: list[dict]):
    import pandas as pd

    frame = pd.DataFrame({"seq_id": [s.seq_id for s in seqs], "split": [s.split for s in seqs],
                          "grade": [s.grade for s in seqs], "label_bin": [s.label_bin for s in seqs]})
    return from_sequence_probs(frame, np.stack([r["probs"] for r in results]))


def train(cfg: dict, prepared_dir, latents_dir, diffae_path, out_dir, predictions_path, seed: int,
          device_name: str = "auto") -> Path:
    out_dir = Path(out_dir)
    data = load_prepared(prepared_dir)
    features = load_latents(latents_dir)  # memory-mapped (z, tokens): a batch reads only its rows (real BraTS: ~11 GB)
    tokens = features[1]
    task, num_classes = data.meta["task"], data.num_classes
    parallel = Parallel(pick_device(device_name))
    device = parallel.device
    tcfg = cfg["train"]
    share = parallel.share(tcfg["batch_size"], "prm.train.batch_size")
    seqs = sequences(data, cfg["t_max"])
    train_seqs = [s for s in seqs if s.split == "train"]
    val_seqs = [s for s in seqs if s.split == "val"]
    if not train_seqs or not val_seqs:
        raise DataError(f"{prepared_dir}: the PRM needs sequences in both the train and the val split")
    # here, not at the top: the stages that only load and run a trained PRM (explain, export) need not
    # import MONAI (4 s a process)
    from monai.networks.schedulers import DDPMScheduler

    from lvdr.diffae.train import load_model

    diffae, diffae_cfg = load_model(diffae_path, device)
    d = diffae_cfg["z_dim"]
    if d % cfg["heads"]:
        raise ConfigError(f"config key 'prm.heads': {cfg['heads']} heads do not divide d = {d} (diffae.z_dim)")
    decoder = diffae.decoder
    decoder.train(cfg["finetune_decoder"]).requires_grad_(cfg["finetune_decoder"])
    scheduler = DDPMScheduler(num_train_timesteps=diffae_cfg["timesteps"], schedule=diffae_cfg["beta_schedule"])
    torch.manual_seed(seed)
    model = PRM(tokens.shape[2], tokens.shape[1], d, num_classes, cfg, features[0].shape[1]).to(device)
    rows = np.sort(np.concatenate([s.rows for s in train_seqs]))
    model.set_input_statistics(channel_statistics(tokens, rows), channel_statistics(features[0], rows))
    trained = parallel.wrap(model)
    reconstructing = parallel.wrap(decoder) if cfg["finetune_decoder"] else decoder  # DDP syncs a fine-tuned decoder
    ema = EMA(model, tcfg["ema_decay"]) if tcfg["ema_decay"] > 0 else None
    evaluated = ema.model if ema else model  # the weights that are validated, selected and saved
    params = list(model.parameters()) + (list(decoder.parameters()) if cfg["finetune_decoder"] else [])
    optimizer = adamw(params, tcfg["lr"], tcfg["weight_decay"])
    weight = class_weights([s.grade for s in train_seqs], num_classes).to(device) if cfg["class_weights"] else None
    checkpoints = Checkpoints(out_dir / "checkpoints", config_hash({**cfg, "seed": seed, "tokens": tokens.shape,
                                                                    "model": model_signature(model)}))
    state = checkpoints.load() or {"step": 0, "curve": [], "best": None, "best_step": 0, "best_model": None}
    precision = MixedPrecision(device, tcfg["precision"])
    if state["step"]:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        precision.load_state_dict(state.get("scaler"))
        if ema:
            ema.load_state_dict(state["ema"])
        if cfg["finetune_decoder"]:
            decoder.load_state_dict(state["decoder"])
    log.info("PRM: %.2fM parameters, d %d, %d train / %d val sequences (T <= %d), %s task, %d steps on %s; "
             "checkpoint by %s", sum(p.numel() for p in model.parameters()) / 1e6, d, len(train_seqs), len(val_seqs),
             cfg["t_max"], task, tcfg["steps"], device, tcfg["select"])
    ramp = tcfg["traj_ramp"] * tcfg["steps"]  # steps over which lambda_traj rises from 0
    bar = tqdm(total=tcfg["steps"], initial=state["step"], desc="train prm", unit="step", mininterval=1.0,
               disable=not parallel.main)
    while state["step"] < tcfg["steps"]:
        seed_step(seed, state["step"])
        lr = tcfg["lr"] * lr_factor(state["step"], tcfg["steps"], tcfg["warmup_fraction"], tcfg["schedule"])
        set_lr(optimizer, lr)
        batch = [train_seqs[i] for i in np.random.randint(0, len(train_seqs), tcfg["batch_size"])]  # the global batch
        if tcfg["flip_depth"] > 0:
            batch = [flip_depth(s) if flip else s for s, flip in zip(batch, np.random.random(len(batch)) < tcfg["flip_depth"])]
        inputs = collate(batch[share], features, device)  # this process's share of it
        labels = torch.as_tensor([s.grade for s in batch[share]], device=device)
        model.train()
        with precision.autocast(), global_batch():
            out = trained(**inputs, latents=cfg["lambda_step"] > 0)
            recon = (recon_loss(reconstructing, scheduler, out["z_sem"], batch, data.slices, cfg["recon_k"], device, share,
                                 cfg["recon_fraction"])
                     if cfg["lambda_recon"] > 0 else torch.zeros((), device=device))
            terms = losses(cfg, task, out, labels, inputs["mask"], recon, weight, min(1.0, state["step"] / ramp) if ramp else 1.0)
        optimizer.zero_grad(set_to_none=True)
        precision.step(terms["total"], optimizer, params, tcfg["grad_clip"])
        if ema:
            ema.update(model)
        state["step"] += 1
        row = {"step": state["step"], "lr": lr, **parallel.average({"loss" if k == "total" else f"loss_{k}": v.item()
                                                                   for k, v in terms.items()})}
        if state["step"] % tcfg["eval_every"] == 0 or state["step"] == tcfg["steps"]:
            row.update(parallel.from_main(lambda: validate(evaluated, cfg, task, val_seqs, features, device)))
            better, value = improves(tcfg["select"], task, row, state["best"])
            if better:
                state.update(best=value, best_step=state["step"], best_model=copy.deepcopy(evaluated.state_dict()))
                if cfg["finetune_decoder"]:
                    state["best_decoder"] = copy.deepcopy(decoder.state_dict())
            bar.set_postfix(val=f"{row['val_score']:.3f}", loss=f"{row['val_loss']:.3f}", best=state["best_step"])
            state["curve"].append(row)
            extra = {"decoder": decoder.state_dict()} if cfg["finetune_decoder"] else {}
            if ema:
                extra["ema"] = ema.state_dict()
            if parallel.main:
                checkpoints.save({**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scaler": precision.state_dict(), **extra})
        else:
            state["curve"].append(row)
        bar.update(1)
    bar.close()
    parallel.close()
    if not parallel.main:  # rank 0 writes the outputs
        return out_dir / "model.pt"
    chosen = next(r for r in state["curve"] if r["step"] == state["best_step"])
    log.info("PRM trained to step %d; kept step %d (%s): validation %s %.4f, loss %.4f", state["step"], state["best_step"],
             tcfg["select"], "MAE" if task == "ordinal" else "AUC", chosen["val_score"], chosen["val_loss"])
    model.load_state_dict(state["best_model"])
    results = run_sequences(model, seqs, features, device)
    predictions = predictions_of(seqs, results).assign(seed=seed)
    threshold = None
    if task == "binary" and cfg["binary_threshold"] == "validation":
        val = predictions[predictions.split == "val"]
        threshold = choose_threshold(val.p_bin.to_numpy(), val.label_bin.to_numpy())
        predictions = apply_threshold(predictions, threshold)
        log.info("binary decision threshold %.3f, chosen on %d validation sequences", threshold, len(val))
    write_curve(out_dir / "curve.csv", state["curve"])
    save_torch({"config": cfg, "state_dict": model.state_dict(), "best_step": state["best_step"], "d": d,
                "token_shape": [int(n) for n in tokens.shape[1:]], "code_dim": int(features[0].shape[1]), "num_classes": num_classes,
                "threshold": None if threshold is None else float(threshold), "decoder": state.get("best_decoder")}, out_dir / "model.pt")
    write_predictions(predictions_path, predictions)
    write_trajectories(out_dir / "trajectories.npz", seqs, results)
    return out_dir / "model.pt"


def load_prm(path: str | Path, device="cpu") -> PRM:
    """The trained PRM (best validation checkpoint, eval mode), as ``train`` saved it; ``threshold`` holds
    its binary decision threshold (None: the most probable class decides)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no trained PRM (run `lvdr train-prm` first)")
    saved = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only: runs no code
    return prm_from_saved(saved, saved["state_dict"], device)


PRM_META = ("config", "d", "token_shape", "code_dim", "num_classes", "threshold", "best_step")  # what builds a saved PRM


def prm_from_saved(meta: dict, state_dict: dict, device="cpu") -> PRM:
    """The PRM that ``meta`` (``PRM_META``) describes, with these weights, in eval mode."""
    num_tokens, channels = meta["token_shape"]
    model = PRM(channels, num_tokens, meta["d"], meta["num_classes"], meta["config"], meta.get("code_dim"))
    model.load_state_dict(state_dict)
    model.threshold = meta.get("threshold")
    return model.to(device).eval()


def write_trajectories(path: Path, seqs: list[Sequence], results: list[dict]) -> None:
    lengths = np.array([len(s.rows) for s in seqs])
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, seq_id=np.array([s.seq_id for s in seqs]), split=np.array([s.split for s in seqs]),
                 grade=np.array([s.grade for s in seqs]), offsets=np.concatenate([[0], np.cumsum(lengths)]),
                 P=np.concatenate([r["P"] for r in results]), z=np.concatenate([r["z"] for r in results]),
                 row=np.concatenate([s.rows for s in seqs]), depth=np.concatenate([s.depth for s in seqs]))
