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
