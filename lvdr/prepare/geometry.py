"""Crop and resize stacks of 2D slices with MONAI transforms."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import BorderPad, Resize, SpatialCrop


def square_crop(stack: np.ndarray, centre, side: int) -> np.ndarray:
    """(n, A, B) -> (n, side, side) around ``centre`` (a, b); zero-padded where it leaves the image."""
    pad = side // 2 + 1
    padded = BorderPad(spatial_border=[pad, pad], mode="constant")(torch.as_tensor(stack, dtype=torch.float32))
    centre = [int(round(c)) + pad for c in centre]
    return np.asarray(SpatialCrop(roi_center=centre, roi_size=[side, side])(padded))


def resize(stack: np.ndarray, size: int) -> np.ndarray:
    """(n, H, W) -> (n, size, size), anti-aliased when shrinking."""
    if stack.shape[-2:] == (size, size):
        return np.asarray(stack, dtype=np.float32)
    out = Resize(spatial_size=(size, size), mode="bilinear", anti_aliasing=True)(torch.as_tensor(stack, dtype=torch.float32))
    return np.asarray(out)
