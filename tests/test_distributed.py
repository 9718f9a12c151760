"""Data-parallel training: two gloo processes under torchrun follow one process's loss curve with the same
global batch and seed, survive a kill mid-run, and leave a model that loads in one process.

Each trainer runs once in this process and once as ``torchrun --nproc_per_node 2`` (through tests/kill.py,
which kills rank 0 part-way and is then started again to resume). Dropout is off: its masks are the one
draw made per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lvdr import config as configs

KILL = Path(__file__).with_name("kill.py")
RTOL, ATOL = 1e-3, 1e-6  # the processes sum their gradients in another order than one process, and Adam amplifies it


def torchrun(args: list[str], cwd: Path, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("LVDR_TEST_KILL_AT", None)
    if kill_at is not None:
        env["LVDR_TEST_KILL_AT"] = str(kill_at)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--", str(KILL), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def run_killed_then_resumed(args: list[str], tmp_path: Path, kill_at: int, log: Path) -> str:
    """The two-process run, killed at step ``kill_at`` and started again; the resumed run's log."""
    killed = torchrun([*args, "--log", str(log)], tmp_path, kill_at)
    assert killed.returncode != 0, "the run should have been killed"
    done = torchrun([*args, "--log", str(log)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return log.read_text()


def write_config(tmp_path: Path, sections: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"seed": 1, "device": "cpu", **sections}))
    configs.load([path])  # it must validate
    return path


def assert_same_curve(single: Path, parallel: Path, columns: list[str]) -> None:
    a, b = pd.read_csv(single), pd.read_csv(parallel)
    assert list(a.step) == list(b.step)
    for column in columns:
        np.testing.assert_allclose(b[column], a[column], rtol=RTOL, atol=ATOL, err_msg=column)


def assert_same_predictions(single: Path, parallel: Path) -> None:
    """What the kept models compute. Their weights are compared through it: where a weight's gradient is
    nearly 0 (a bias before a normalisation), Adam divides the rounding noise by its own size and moves the
    two runs' weights apart by up to the learning rate, without changing the function."""
    a, b = pd.read_parquet(single), pd.read_parquet(parallel)
    columns = [c for c in a.columns if c.startswith("p_")]
    assert list(a.seq_id) == list(b.seq_id) and columns
    np.testing.assert_allclose(b[columns], a[columns], atol=1e-3)


def assert_rank_zero_alone_wrote(log: str, out: Path) -> None:
    assert "process 0 of 2" in log and "process 1 of 2" not in log  # rank 1 logs nothing but warnings
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt"]  # no temporary files left


def test_diffae_two_processes_follow_one(spider_prepared, diffae_config, tmp_path):
    from lvdr.diffae.train import load_model, train

    cfg = {**diffae_config, "dropout": 0.0}
    single = train(cfg, spider_prepared, tmp_path / "single", seed=1, device_name="cpu")
    config = write_config(tmp_path, {"diffae": cfg})
    log = run_killed_then_resumed(["train-diffae", "spider", "--config", str(config), "--prepared", str(spider_prepared),
                                   "--out", str(tmp_path / "ddp")], tmp_path, kill_at=4, log=tmp_path / "ddp.log")
    assert "resuming from" in log and "(step 3)" in log
    assert_rank_zero_alone_wrote(log, tmp_path / "ddp")
    assert_same_curve(tmp_path / "single" / "curve.csv", tmp_path / "ddp" / "curve.csv", ["loss"])
    model, _ = load_model(tmp_path / "ddp" / "model.pt")  # saved under DDP, loaded in one process
    assert model.state_dict().keys() == torch.load(single, weights_only=True)["state_dict"].keys()
    with np.load(tmp_path / "single" / "reconstructions.npz") as a, np.load(tmp_path / "ddp" / "reconstructions.npz") as b:
        np.testing.assert_allclose(b["ddim"], a["ddim"], atol=1e-3)  # what the saved models compute


def test_densenet_two_processes_follow_one(spider_prepared, tmp_path):
    from lvdr.baselines.densenet import build, train

    cfg = configs.validate({"densenet": {"lr": 0.002, "batch_size": 8, "max_steps": 4, "eval_every": 2, "patience": 5,
                                         "norm": "group"}})["densenet"]
    train(cfg, spider_prepared, tmp_path / "single", tmp_path / "single.parquet", seed=2, device_name="cpu")
    config = write_config(tmp_path, {"densenet": cfg})
    log = run_killed_then_resumed(["train-densenet", "spider", "--config", str(config), "--seed", "2", "--prepared",
                                   str(spider_prepared), "--out", str(tmp_path / "ddp"), "--predictions",
                                   str(tmp_path / "ddp.parquet")], tmp_path, kill_at=3, log=tmp_path / "ddp.log")
    assert "(step 2)" in log
    assert_rank_zero_alone_wrote(log, tmp_path / "ddp")
    assert_same_curve(tmp_path / "single" / "curve.csv", tmp_path / "ddp" / "curve.csv", ["loss", "val_loss"])
    saved = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)  # saved under DDP, loaded in one process
    build(saved["in_channels"], saved["num_classes"], 16, saved["config"]["norm"]).load_state_dict(saved["state_dict"])
    assert_same_predictions(tmp_path / "single.parquet", tmp_path / "ddp.parquet")


def test_prm_two_processes_follow_one(spider_prepared, diffae_config, tmp_path):
    from lvdr.diffae.cache import build_cache
    from lvdr.diffae.train import train as train_diffae
    from lvdr.prm.train import load_prm, train

    dae = train_diffae(diffae_config, spider_prepared, tmp_path / "dae", seed=1, device_name="cpu")
    build_cache(dae, spider_prepared, tmp_path / "latents", batch_size=64, device_name="cpu")
    cfg = configs.validate({"prm": {"slots": 5, "heads": 4, "queries": 2, "recon_k": 2, "lambda_step": 1.0,
                                    "dropout": 0.0, "slot_dropout": 0.0, "stochastic_depth": 0.0,
                                    "train": {"steps": 4, "batch_size": 4, "eval_every": 2}}})["prm"]
    train(cfg, spider_prepared, tmp_path / "latents", dae, tmp_path / "single", tmp_path / "single.parquet", seed=4,
          device_name="cpu")
    config = write_config(tmp_path, {"prm": cfg})
    log = run_killed_then_resumed(["train-prm", "spider", "--config", str(config), "--seed", "4", "--prepared",
                                   str(spider_prepared), "--latents", str(tmp_path / "latents"), "--diffae", str(dae),
                                   "--out", str(tmp_path / "ddp"), "--predictions", str(tmp_path / "ddp.parquet")],
                                  tmp_path, kill_at=3, log=tmp_path / "ddp.log")
    assert "(step 2)" in log
    assert_rank_zero_alone_wrote(log, tmp_path / "ddp")
    losses = [c for c in pd.read_csv(tmp_path / "single" / "curve.csv").columns if c.startswith(("loss", "val_"))]
    assert {"loss_recon", "loss_traj", "loss_ord", "loss_step"} <= set(losses)
    assert_same_curve(tmp_path / "single" / "curve.csv", tmp_path / "ddp" / "curve.csv", losses)
    load_prm(tmp_path / "ddp" / "model.pt")  # saved under DDP, loaded in one process
    assert_same_predictions(tmp_path / "single.parquet", tmp_path / "ddp.parquet")


def test_a_batch_that_does_not_split_over_the_processes_is_refused(monkeypatch):
    from lvdr.distributed import Parallel
    from lvdr.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "1")
    assert Parallel(torch.device("cpu")).share(6, "prm.train.batch_size") == slice(0, 6)
    parallel = Parallel(torch.device("cpu"))
    parallel.world, parallel.rank = 4, 1  # the arithmetic of rank 1 of 4, without a process group
    assert parallel.share(8, "prm.train.batch_size") == slice(2, 4)
    with pytest.raises(ConfigError, match="prm.train.batch_size.*6.*4 processes"):
        parallel.share(6, "prm.train.batch_size")
