"""The latent cache: z and the 8 x 8 patch tokens of every prepared slice, from the frozen encoder.

Rows align with the slice table. ``meta.json`` records the hashes of the checkpoint and of
the prepared data (when both match, the cache is reused instead of recomputed) and the cache's
size on disk. Tokens are float16, n x 64 x channels: real BraTS at 64 px (about 155 slices per
volume, 512 channels) comes to about 11 GB, so a cache larger than ``cache.budget_gb`` is
announced with a warning before it is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lvdr.data import load_prepared, to_model_range
from lvdr.diffae.train import load_model
from lvdr.files import atomic_path, read_json, write_json
from lvdr.training import file_hash, pick_device

log = logging.getLogger(__name__)


def build_cache(model_path: str | Path, prepared_dir: str | Path, out_dir: str | Path, batch_size: int,
                device_name: str = "auto", budget_gb: float | None = None) -> Path:
    out_dir, prepared_dir = Path(out_dir), Path(prepared_dir)
    fingerprint = {"checkpoint_sha256": file_hash(model_path),
                   "slices_sha256": file_hash(prepared_dir / "slices.npy"),
                   "table_sha256": file_hash(prepared_dir / "slices.parquet")}
    meta_path = out_dir / "meta.json"
    if meta_path.exists() and all((out_dir / n).exists() for n in ("z.npy", "tokens.npy")):
        old = read_json(meta_path)
        if all(old.get(k) == v for k, v in fingerprint.items()):
            log.info("latent cache in %s is up to date (same checkpoint and slices); reused", out_dir)
            return meta_path
    device = pick_device(device_name)
    model, cfg = load_model(model_path, device)
    data = load_prepared(prepared_dir)
    n = len(data.slices)
    with torch.no_grad():
        z0, t0 = model.encode(to_model_range(data.slices[:1]).to(device))
    z_shape, token_shape = (n, z0.shape[1]), (n, *t0.shape[1:])
    size_gb = (np.prod(z_shape) * 4 + np.prod(token_shape) * 2) / 1e9
    if budget_gb is not None and size_gb > budget_gb:
        log.warning("%s: the latent cache for %d slices will take %.1f GB, above config key 'cache.budget_gb' (%g GB); "
                    "make room or raise the budget", out_dir, n, size_gb, budget_gb)
    with atomic_path(out_dir / "z.npy") as z_tmp, atomic_path(out_dir / "tokens.npy") as t_tmp:
        z_out = np.lib.format.open_memmap(z_tmp, mode="w+", dtype=np.float32, shape=z_shape)
        t_out = np.lib.format.open_memmap(t_tmp, mode="w+", dtype=np.float16, shape=token_shape)
        with torch.no_grad():
            for start in tqdm(range(0, n, batch_size), desc="cache latents", unit="batch"):
                z, tokens = encode_slices(model, data.slices[start:start + batch_size], device)
                z_out[start:start + len(z)] = z
                t_out[start:start + len(z)] = tokens
        z_out.flush()
        t_out.flush()
        del z_out, t_out
    write_json(meta_path, {**fingerprint, "checkpoint": str(model_path), "n_slices": n,
                           "z_dim": z_shape[1], "token_shape": list(token_shape[1:]), "size_gb": round(float(size_gb), 4)})
    log.info("cached z %s and tokens %s for %d slices in %s (%.2f GB)", z_shape[1:], token_shape[1:], n, out_dir, size_gb)
    return meta_path


@torch.no_grad()
def encode_slices(model, slices: np.ndarray, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """(z, tokens) of stored slices as the cache keeps them: z float32, tokens float16 (``lvdr grade`` reads a
    new scan through this too, so that it sees exactly the numbers the PRM was trained on)."""
    z, tokens = model.encode(to_model_range(slices).to(device))
    return z.float().cpu().numpy(), tokens.float().cpu().numpy().astype(np.float16)
