"""Shared fixtures: tiny configs and tiny datasets written in the real file formats."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from lvdr import config as configs

REPO = Path(__file__).resolve().parent.parent
SHARED_SPIDER = REPO.parent / "shared" / "data" / "spider"

TINY = {
    "seed": 3,
    "data_seed": 3,
    "spider": {
        "demo": {"n_patients": 6, "discs_per_patient": 2, "in_plane_px": 64, "in_plane_mm": 2.5, "n_sagittal": 7,
                 "slice_mm": 6.0},
        "prepare": {"spacing_mm": [6.0, 1.25, 1.25], "crop_px": 40, "image_size": 16, "val_fraction": 0.25},
    },
    "brats": {
        "demo": {"n_cases": 6, "shape": [32, 32, 24], "spacing_mm": [6.0, 6.0, 7.0]},
        "prepare": {"label_level": "slab", "slab_length": 6, "image_size": 16},
    },
    "retinamnist": {"demo": {"n_train": 10, "n_val": 5, "n_test": 5}},
    "diffae": {"base_channels": 8, "channel_mult": [1, 2], "encoder_channel_mult": [1, 2], "attention_resolutions": [],
               "num_res_blocks": 1, "z_dim": 8, "ddim_steps": 4, "num_recon": 2, "encoder_pool": "avgmax", "seeds": 2,
               "train": {"steps": 4, "batch_size": 8, "checkpoint_every": 2}},
    "baselines": {"C_grid": [1.0], "max_iter": 500},
    "densenet": {"batch_size": 8, "max_steps": 2, "eval_every": 1, "patience": 2},
    "prm": {"heads": 2, "slots": 4, "queries": 2, "recon_k": 1, "seeds": 2, "lambda_step": 1.0, "lambda_move": 1.0,
            "head": "anchored", "trajectory": "readout",  # the demo's model, beyond the paper's defaults
            "train": {"steps": 2, "batch_size": 4, "eval_every": 1}},
    "evaluate": {"bootstrap": 20},
}


@pytest.fixture
def tiny_config() -> dict:
    return configs.validate(TINY)


@pytest.fixture(scope="session")
def spider_demo(tmp_path_factory) -> Path:
    """A tiny SPIDER folder made by the demo generator (read-only for tests: copy before changing)."""
    from lvdr.demo import spider

    root = tmp_path_factory.mktemp("spider") / "demo"
    spider.generate(root, configs.validate(TINY)["spider"], seed=3)
    return root


@pytest.fixture
def spider_copy(spider_demo, tmp_path) -> Path:
    root = tmp_path / "spider"
    shutil.copytree(spider_demo, root)
    return root


@pytest.fixture
def warnings_logged(caplog):
    caplog.set_level(logging.WARNING)
    return caplog


TINY_DIFFAE = {"base_channels": 8, "channel_mult": [1, 2], "encoder_channel_mult": [1, 2], "attention_resolutions": [8],
               "num_res_blocks": 1, "z_dim": 16, "dropout": 0.1, "ddim_steps": 10, "num_recon": 2,
               "train": {"steps": 6, "batch_size": 8, "lr": 0.002, "ema_decay": 0.99, "checkpoint_every": 3}}


@pytest.fixture(scope="session")
def spider_prepared(spider_demo, tmp_path_factory) -> Path:
    """The tiny SPIDER demo, prepared (16 x 16 slices)."""
    from lvdr import fetch, prepare

    cfg = configs.validate(TINY)["spider"]
    cfg = {**cfg, "source": "folder", "path": str(spider_demo)}
    root = tmp_path_factory.mktemp("spider_prepared")
    manifest = fetch.run("spider", cfg, root / "raw", seed=3)
    prepare.run("spider", cfg, manifest, root / "prepared", seed=3)
    return root / "prepared"


@pytest.fixture
def diffae_config() -> dict:
    return configs.validate({"diffae": TINY_DIFFAE})["diffae"]


@pytest.fixture
def kill_at(monkeypatch):
    """kill_at(k): the next training run stops (raises kill.Killed) at its step k, after the checkpoints before it."""
    import kill

    return lambda step: kill.arm(step, kill._raise, monkeypatch.setattr)
