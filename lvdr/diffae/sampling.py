"""Deterministic DDIM encoding of an image to its noise x_T, and DDIM decoding back (eta = 0).

The round trip is exact only if no step clips its estimate of x0: clipping (MONAI's default)
makes encoding stop being the inverse of decoding (demo SPIDER: 17.7 dB PSNR clipped, 34 dB not).
So both chains run unclipped and only the final image is clamped to [-1, 1]; decoding from fresh
noise, which inverts nothing, may clip as the usual sampler does.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDIMScheduler


def ddim(cfg: dict, steps: int, clip: bool = False) -> tuple[DDIMScheduler, list[int]]:
    """A DDIM scheduler and the evenly strided timesteps 0, s, 2s, ... that both chains visit."""
    scheduler = DDIMScheduler(num_train_timesteps=cfg["timesteps"], schedule=cfg["beta_schedule"], clip_sample=clip)
    scheduler.set_timesteps(steps)
    stride = cfg["timesteps"] // steps
    return scheduler, [k * stride for k in range(steps)]


@torch.no_grad()
def encode_noise(decoder, x0: torch.Tensor, z: torch.Tensor, cfg: dict, steps: int) -> torch.Tensor:
    """x0 -> x_T by running the deterministic DDIM chain backwards, conditioned on z."""
    scheduler, timesteps = ddim(cfg, steps)
    x = x0
    for t in timesteps[:-1]:
        tt = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        x, _ = scheduler.reversed_step(decoder(x, tt, z), t, x)
    return x


@torch.no_grad()
def decode(decoder, x_t: torch.Tensor, z: torch.Tensor, cfg: dict, steps: int, clip: bool = False, eta: float = 0.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """x_T -> x0 with DDIM steps, conditioned on z (``clip``: clip each x0 estimate, for sampling from
    fresh noise; never for decoding an encoded x_T). ``eta`` 0 is deterministic; eta > 0 adds fresh
    noise at every step (drawn from ``generator``), so repeated decodes of one (z, x_T) differ where
    z leaves the image undecided."""
    scheduler, timesteps = ddim(cfg, steps, clip)
    x = x_t
    for t in reversed(timesteps):
        tt = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        x, _ = scheduler.step(decoder(x, tt, z), t, x, eta=eta, generator=generator)
    return x.clamp(-1, 1)
