"""Texture for the demo generators."""

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def _band(shape: tuple, scale_px: float) -> np.ndarray:
    """The Fourier coefficients below 1/scale_px; computed once per grid (the generators ask again and again)."""
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    return np.sqrt(sum(f**2 for f in freqs)) < 1.0 / scale_px


def smooth_noise(rng: np.random.Generator, shape, scale_px: float) -> np.ndarray:
    """Band-limited noise in [-1, 1]: random Fourier coefficients kept below 1/scale_px."""
    keep = _band(tuple(shape), float(scale_px))
    real, imag = rng.normal(size=shape), rng.normal(size=shape)
    spectrum = np.zeros(shape, complex)
    spectrum[keep] = real[keep] + 1j * imag[keep]
    field = np.real(np.fft.ifftn(spectrum))
    return field / (np.abs(field).max() + 1e-8)
