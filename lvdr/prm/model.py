"""The Progressive Refinement Module (paper 2.3, Appendix C), written by hand.

S learnable slots form a memory M_0 shared by all sequences. At each step t the memory reads
slice t's 8 x 8 patch tokens (projected to d, plus a learned patch-position and a sinusoidal
depth embedding) through a stack of blocks (cross-attention slots -> tokens, self-attention
among slots, FFN), the same parameters at every t, then a LayerNorm of the memory. P_t = mean
of the slots is the reasoning trajectory. (Without that LayerNorm the residual updates pile up:
||P_t|| grows linearly with t and every step has about the same size whatever the slice shows,
so the trajectory cannot point at the slices that carried the evidence.) Attention pooling with Q learned queries (Set Transformer's PMA) over M_t,
concatenation and a linear map give z~_t; z_t = W LN(z~_t) + b. After the last slice,
z_sem = z_T predicts the grade and conditions the diffusion decoder.

Padded steps (t beyond a sequence's length) leave its memory unchanged, so a sequence's
result does not depend on what it is batched with.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal embedding of (possibly fractional) positions: (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[..., None] * freqs
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for a whole sequence with probability p while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device) >= self.p
        return x * keep / (1 - self.p)


class RefinementBlock(nn.Module):
    """Cross-attention (slots attend to tokens), self-attention among slots, FFN; pre-norm residuals."""

    def __init__(self, d: int, heads: int, dropout: float, drop_path: float, ffn_mult: int = 4):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(d), nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * d, d),
                                 nn.Dropout(dropout))
        self.drop_path = DropPath(drop_path)

    def forward(self, slots, tokens):
        kv = self.norm_kv(tokens)
        slots = slots + self.drop_path(self.cross(self.norm_q(slots), kv, kv, need_weights=False)[0])
        q = self.norm_self(slots)
        slots = slots + self.drop_path(self.self_attn(q, q, q, need_weights=False)[0])
        return slots + self.drop_path(self.ffn(self.norm_ffn(slots)))


class AttentionPool(nn.Module):
    """PMA: Q learned queries attend to the slots; concatenated outputs map to z~; z = W LN(z~) + b."""

    def __init__(self, d: int, queries: int, heads: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, d) * d**-0.5)
        self.norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.merge = nn.Linear(queries * d, d)
        self.calibrate = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))

    def forward(self, slots, slot_mask=None):
        kv = self.norm(slots)
        q = self.queries.expand(slots.shape[0], -1, -1)
        pooled = self.attn(q, kv, kv, key_padding_mask=slot_mask, need_weights=False)[0]
        return self.calibrate(self.merge(pooled.flatten(1)))


class PRM(nn.Module):
    def __init__(self, token_channels: int, num_tokens: int, d: int, num_classes: int, cfg: dict):
        super().__init__()
        self.d = d
        self.embed = nn.Sequential(nn.Linear(token_channels, d), nn.LayerNorm(d))
        self.patch_pos = nn.Parameter(torch.randn(num_tokens, d) * 0.02)
        self.slots = nn.Parameter(torch.randn(cfg["slots"], d) * d**-0.5)
        depth_rates = torch.linspace(0, cfg["stochastic_depth"], cfg["blocks"]).tolist()
        self.blocks = nn.ModuleList(RefinementBlock(d, cfg["heads"], cfg["dropout"], p) for p in depth_rates)
        self.memory_norm = nn.LayerNorm(d)
        self.pool = AttentionPool(d, cfg["queries"], cfg["heads"])
        self.head = nn.Linear(d, num_classes)
        self.slot_dropout = cfg["slot_dropout"]

    def step(self, memory, tokens):
        for block in self.blocks:
            memory = block(memory, tokens)
        return self.memory_norm(memory)  # keeps the recurrent memory from drifting in norm step after step

    def forward(self, tokens, depth, mask, latents: bool = False):
        """tokens (B, T, K, c), depth (B, T) slice positions, mask (B, T) True at real slices.

        Returns ``z_sem`` (B, d), ``logits`` (B, C) and the trajectory ``P`` (B, T, d); with
        ``latents`` also the decodable per-step latents ``z`` (B, T, d). Padded steps repeat the last state.
        """
        b, t_max = tokens.shape[:2]
        x = self.embed(tokens) + self.patch_pos + sinusoidal(depth, self.d)[:, :, None, :]
        memory = self.slots.expand(b, -1, -1)
        slot_mask = None
        if self.training and self.slot_dropout > 0:  # drop whole slots from the read-out (never all of them)
            slot_mask = torch.rand(b, memory.shape[1], device=memory.device) < self.slot_dropout
            slot_mask[:, 0] = False
        states, step_latents = [], []
        for t in range(t_max):
            updated = self.step(memory, x[:, t])
            valid = mask[:, t][:, None, None]
            memory = torch.where(valid, updated, memory)
            states.append(self._mean(memory, slot_mask))
            if latents:
                step_latents.append(self.pool(memory, slot_mask))
        z_sem = step_latents[-1] if latents else self.pool(memory, slot_mask)
        out = {"z_sem": z_sem, "logits": self.head(z_sem), "P": torch.stack(states, 1)}
        if latents:
            out["z"] = torch.stack(step_latents, 1)
        return out

    @staticmethod
    def _mean(memory, slot_mask):
        if slot_mask is None:
            return memory.mean(1)
        keep = (~slot_mask).float()[..., None]
        return (memory * keep).sum(1) / keep.sum(1)
