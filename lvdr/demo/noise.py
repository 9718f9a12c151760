"""Texture for the demo generators."""

import numpy as np


def smooth_noise(rng: np.random.Generator, shape, scale_px: float) -> np.ndarray:
    """Band-limited noise in [-1, 1]: random Fourier coefficients kept below 1/scale_px."""
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(f**2 for f in freqs))
    spectrum = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) * (radius < 1.0 / scale_px)
    field = np.real(np.fft.ifftn(spectrum))
    return field / (np.abs(field).max() + 1e-8)
