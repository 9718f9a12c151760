"""DenseNet121 baseline: it learns, resumes exactly, and writes the shared predictions format."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from lvdr import config as configs
from lvdr.baselines.densenet import augmentation, augmented, build, train
from lvdr.predictions import read_predictions


def tiny_cfg(**train):
    cfg = configs.validate({"densenet": {"lr": 0.002, "batch_size": 8, "max_steps": 4, "eval_every": 2, "patience": 5}})
    return {**cfg["densenet"], **train}


def test_loss_falls_on_an_easy_task():
    torch.manual_seed(0)
    model = build(1, 2, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.cat([torch.full((8, 1, 16, 16), -0.8), torch.full((8, 1, 16, 16), 0.8)]) + 0.1 * torch.randn(16, 1, 16, 16)
    y = torch.tensor([0] * 8 + [1] * 8)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def test_flips_only_where_anatomy_allows():
    names = lambda ds: [type(t).__name__ for t in augmentation(ds).transforms]  # noqa: E731
    assert "RandFlip" not in names("spider")
    assert "RandFlip" in names("brats") and "RandFlip" in names("retinamnist")


def test_augmented_slices_are_plain_tensors_and_reproducible():
    """A MONAI MetaTensor in the batch would send every operation of the forward pass through MONAI's
    __torch_function__ (it made a job 1.2x slower); the global tracking switch is left as it was."""
    from monai.data import get_track_meta

    image = np.random.default_rng(0).random((1, 16, 16), dtype=np.float32)
    out = augmented(augmentation("brats"), image, 7)
    assert type(out) is torch.Tensor and out.shape == (1, 16, 16)
    assert get_track_meta()
    assert torch.equal(out, augmented(augmentation("brats"), image, 7))


def test_train_writes_predictions_and_resume_matches(spider_prepared, tmp_path, kill_at, caplog):
    from kill import Killed

    full = train(tiny_cfg(), spider_prepared, tmp_path / "full", tmp_path / "full.parquet", seed=2, device_name="cpu")
    kill_at(3)  # after the checkpoint at step 2
    with pytest.raises(Killed):
        train(tiny_cfg(), spider_prepared, tmp_path / "resumed", tmp_path / "resumed.parquet", seed=2, device_name="cpu")
    caplog.set_level(logging.INFO)
    resumed = train(tiny_cfg(), spider_prepared, tmp_path / "resumed", tmp_path / "resumed.parquet", seed=2, device_name="cpu")
    assert "(step 2)" in caplog.text
    a, b = torch.load(full, weights_only=False)["state_dict"], torch.load(resumed, weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    predictions = read_predictions(tmp_path / "full.parquet")
    table = pd.read_parquet(spider_prepared / "slices.parquet")
    assert len(predictions) == table.seq_id.nunique()
    np.testing.assert_allclose(predictions[[f"p_{k}" for k in range(5)]].sum(axis=1), 1.0, atol=1e-5)
    curve = pd.read_csv(tmp_path / "full" / "curve.csv")
    assert curve.val_loss.notna().sum() == 2 and len(curve) == 4


def test_early_stopping_keeps_the_best_weights(spider_prepared, tmp_path):
    cfg = tiny_cfg(lr=0.05, max_steps=40, eval_every=1, patience=2)  # a learning rate this high soon stops improving
    train(cfg, spider_prepared, tmp_path / "run", tmp_path / "p.parquet", seed=2, device_name="cpu")
    curve = pd.read_csv(tmp_path / "run" / "curve.csv")
    assert len(curve) < 40
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert saved["best_step"] == curve.step[curve.val_loss.idxmin()]
