"""The diffusion autoencoder (Preechakul et al. 2022) in 2D.

A semantic encoder (a UNet down path without time input, global average pooling to z, or
with ``encoder_pool: avgmax`` each channel's mean and maximum) and a
noise-predicting UNet decoder conditioned on z the DiffAE way: in every residual block
``h = GN(h) * (1 + t_scale) + t_shift`` and then ``h = h * (1 + z_scale)``. Only that
conditioning is hand-written; attention, timestep embedding and downsampling are MONAI's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import SpatialAttentionBlock
from monai.networks.nets.diffusion_model_unet import DiffusionUnetDownsample, get_timestep_embedding
from torch import nn


def _groups(channels: int) -> int:
    for groups in (32, 16, 8, 4, 2, 1):
        if channels % groups == 0:
            return groups
    return 1


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialised output layers make each residual block start as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class CondResBlock(nn.Module):
    """Residual block with DiffAE conditioning: time as scale-shift after GroupNorm, then z as scale."""

    def __init__(self, cin: int, cout: int, t_dim: int | None = None, z_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.t_proj = nn.Sequential(nn.SiLU(), nn.Linear(t_dim, 2 * cout)) if t_dim else None
        self.z_proj = nn.Sequential(nn.SiLU(), nn.Linear(z_dim, cout)) if z_dim else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, t_emb=None, z=None):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.t_proj is not None:
            scale, shift = self.t_proj(t_emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        if self.z_proj is not None:
            h = h * (1 + self.z_proj(z)[:, :, None, None])
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class Level(nn.Module):
    """Residual blocks (with attention at the chosen resolutions) at one resolution."""

    def __init__(self, cins, cout, attention: bool, t_dim=None, z_dim=None, dropout=0.0):
        super().__init__()
        self.blocks = nn.ModuleList(CondResBlock(c, cout, t_dim, z_dim, dropout) for c in cins)
        self.attn = nn.ModuleList(
            SpatialAttentionBlock(2, cout, norm_num_groups=_groups(cout)) if attention else nn.Identity() for _ in cins
        )


class AvgMaxPool(nn.Module):
    """Each channel's mean and maximum over the map, side by side (2c channels, 1 x 1)."""

    def forward(self, h):
        return torch.cat([F.adaptive_avg_pool2d(h, 1), F.adaptive_max_pool2d(h, 1)], dim=1)


class SemanticEncoder(nn.Module):
    """x -> (z, tokens): z is the global semantic code, tokens the token_grid x token_grid feature map."""

    def __init__(self, in_channels: int, image_size: int, base: int, mult, num_res_blocks: int,
                 attention_resolutions, z_dim: int, token_grid: int = 8, pool: str = "avg"):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        self.levels, self.downs = nn.ModuleList(), nn.ModuleList()
        channels, res = base, image_size
        self.token_level, self.token_grid = None, token_grid
        for i, m in enumerate(mult):
            cout = base * m
            self.levels.append(Level([channels] + [cout] * (num_res_blocks - 1), cout, res in attention_resolutions))
            channels = cout
            if res >= token_grid:
                self.token_level = i  # the last level still at least token_grid wide
            last = i == len(mult) - 1
            self.downs.append(nn.Identity() if last else DiffusionUnetDownsample(2, channels, use_conv=True))
            res = res if last else res // 2
        self.token_channels = base * mult[self.token_level]
        pooling, pooled = (nn.AdaptiveAvgPool2d(1), channels) if pool == "avg" else (AvgMaxPool(), 2 * channels)
        self.out = nn.Sequential(nn.GroupNorm(_groups(channels), channels), nn.SiLU(), pooling,
                                 nn.Conv2d(pooled, z_dim, 1), nn.Flatten())

    @torch.no_grad()
    def init_unit_z(self, x) -> float:
        """Scale the layer that makes z so that z has unit standard deviation on ``x`` (a data-dependent
        init, as LSUV). At the default init z is about 0.1 and barely differs between slices, so the
        decoder's z-modulation starts near constant and the z path learns slowly. Returns the factor."""
        z, _ = self(x)
        factor = 1.0 / max(float(z.float().std()), 1e-8)
        layer = [m for m in self.out if isinstance(m, nn.Conv2d)][-1]  # the 1 x 1 convolution that makes z
        layer.weight.mul_(factor)
        layer.bias.mul_(factor)
        return factor

    def forward(self, x):
        h = self.conv_in(x)
        tokens = None
        for i, (level, down) in enumerate(zip(self.levels, self.downs)):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h))
            if i == self.token_level:
                tokens = F.adaptive_avg_pool2d(h, self.token_grid)
            h = down(h)
        return self.out(h), tokens.flatten(2).transpose(1, 2)  # (B, d), (B, grid*grid, c)


class ConditionalUNet(nn.Module):
    """Noise predictor eps(x_t, t; z) with DiffAE conditioning in every residual block."""

    def __init__(self, in_channels: int, image_size: int, base: int, mult, num_res_blocks: int,
                 attention_resolutions, z_dim: int, dropout: float = 0.0):
        super().__init__()
        self.base = base
        t_dim = base * 4
        self.time_mlp = nn.Sequential(nn.Linear(base, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        kw = dict(t_dim=t_dim, z_dim=z_dim, dropout=dropout)
        self.down_levels, self.downs = nn.ModuleList(), nn.ModuleList()
        skips, channels, res = [base], base, image_size
        for i, m in enumerate(mult):
            cout = base * m
            cins = [channels] + [cout] * (num_res_blocks - 1)
            self.down_levels.append(Level(cins, cout, res in attention_resolutions, **kw))
            channels = cout
            skips += [cout] * num_res_blocks
            if i < len(mult) - 1:
                self.downs.append(DiffusionUnetDownsample(2, channels, use_conv=True))
                skips.append(channels)
                res //= 2
        self.mid1 = CondResBlock(channels, channels, **kw)
        self.mid_attn = SpatialAttentionBlock(2, channels, norm_num_groups=_groups(channels))
        self.mid2 = CondResBlock(channels, channels, **kw)
        self.up_levels, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, m in reversed(list(enumerate(mult))):
            cout = base * m
            cins = []
            for _ in range(num_res_blocks + 1):
                cins.append(channels + skips.pop())
                channels = cout
            self.up_levels.append(Level(cins, cout, res in attention_resolutions, **kw))
            if i > 0:
                self.ups.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cout, cout, 3, padding=1)))
                res *= 2
        self.out = nn.Sequential(nn.GroupNorm(_groups(channels), channels), nn.SiLU(),
                                 _zero(nn.Conv2d(channels, in_channels, 3, padding=1)))

    def forward(self, x, t, z):
        emb = self.time_mlp(get_timestep_embedding(t, self.base))
        h = self.conv_in(x)
        hs = [h]
        for i, level in enumerate(self.down_levels):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h, emb, z))
                hs.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb, z)), emb, z)
        for i, level in enumerate(self.up_levels):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), emb, z))
            if i < len(self.ups):
                h = self.ups[i](h)
        return self.out(h)


class DiffAE(nn.Module):
    """Semantic encoder + conditional decoder; the training loss is the usual eps-prediction MSE."""

    def __init__(self, in_channels: int, image_size: int, cfg: dict):
        super().__init__()
        self.encoder = SemanticEncoder(in_channels, image_size, cfg["base_channels"], cfg["encoder_channel_mult"],
                                       cfg["num_res_blocks"], cfg["attention_resolutions"], cfg["z_dim"],
                                       pool=cfg.get("encoder_pool", "avg"))
        self.decoder = ConditionalUNet(in_channels, image_size, cfg["base_channels"], cfg["channel_mult"],
                                       cfg["num_res_blocks"], cfg["attention_resolutions"], cfg["z_dim"], cfg["dropout"])

    def encode(self, x):
        return self.encoder(x)

    def forward(self, x_noisy, t, x_clean):
        z, _ = self.encoder(x_clean)
        return self.decoder(x_noisy, t, z)
