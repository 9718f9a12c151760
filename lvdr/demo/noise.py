"""Texture for the demo generators."""

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def _band(shape: tuple, scale_px: float) -> np.ndarray:
    """Flat indices of the half spectrum (numpy's rfftn layout) below 1/scale_px; computed once per grid
    (the generators ask again and again)."""
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape[:-1]], np.fft.rfftfreq(shape[-1]), indexing="ij")
    return np.flatnonzero(np.sqrt(sum(f**2 for f in freqs)) < 1.0 / scale_px)


def smooth_noise(rng: np.random.Generator, shape, scale_px: float) -> np.ndarray:
    """Band-limited noise in [-1, 1]: random Fourier coefficients below 1/scale_px, real by construction.

    Only the kept coefficients are drawn, into the half spectrum of a real field: at the BraTS demo's
    coarsest scale that is 1% of the grid, and the inverse transform does half the work of a complex one.
    """
    shape = tuple(int(n) for n in shape)
    keep = _band(shape, float(scale_px))
    half = (*shape[:-1], shape[-1] // 2 + 1)
    spectrum = np.zeros(int(np.prod(half)), complex)
    spectrum[keep] = rng.standard_normal(keep.size) + 1j * rng.standard_normal(keep.size)
    field = np.fft.irfftn(spectrum.reshape(half), s=shape)
    return field / (np.abs(field).max() + 1e-8)
