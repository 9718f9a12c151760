"""lvdr: Latent Visual Diffusion Reasoning for explainable pathology grading."""

__version__ = "0.1.0"

DATASETS = ("spider", "brats", "retinamnist")
