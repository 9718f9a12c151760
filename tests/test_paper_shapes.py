"""The paper's model sizes (App. C) through every training stage, for two steps, on CPU.

The demo trains much smaller models, so a shape or memory bug that only the paper setting hits
(64 px slices, z = d = 512, 8 x 8 x 512 patch tokens, 16 slots, 4 queries, 8 heads, K = 3) would
otherwise first show on a user's GPU. Only step counts and batch sizes are cut here.
"""

import numpy as np
import torch

from lvdr import config as configs

from conftest import REPO, TINY


def paper_config() -> dict:
    cfg = configs.load([REPO / "config" / "config.yaml", REPO / "config" / "paper.yaml"])
    cfg["diffae"].update(ddim_steps=2, num_recon=1)
    cfg["diffae"]["train"].update(steps=2, batch_size=4, checkpoint_every=1)
    cfg["densenet"].update(max_steps=2, batch_size=4, eval_every=1)
    cfg["prm"]["train"].update(steps=2, batch_size=2, eval_every=1)
    return configs.validate(cfg)


def test_every_stage_runs_two_steps_at_the_papers_sizes(spider_demo, tmp_path):
    from lvdr import fetch, prepare
    from lvdr.baselines.densenet import train as train_densenet
    from lvdr.data import load_latents
    from lvdr.diffae.cache import build_cache
    from lvdr.diffae.train import train as train_diffae
    from lvdr.predictions import read_predictions
    from lvdr.prm.train import load_prm, train as train_prm

    torch.set_num_threads(2)
    cfg = paper_config()
    spider = configs.validate({"spider": {**TINY["spider"], "source": "folder", "path": str(spider_demo)}})["spider"]
    spider["prepare"]["image_size"] = cfg["spider"]["prepare"]["image_size"]
    manifest = fetch.run("spider", spider, tmp_path / "raw", seed=3)
    prepare.run("spider", spider, manifest, tmp_path / "prepared", seed=3)
    prepared = tmp_path / "prepared"
    assert np.load(prepared / "slices.npy", mmap_mode="r").shape[-2:] == (64, 64)

    dae = train_diffae(cfg["diffae"], prepared, tmp_path / "diffae", seed=0, device_name="cpu")
    build_cache(dae, prepared, tmp_path / "latents", batch_size=16, device_name="cpu")
    z, tokens = load_latents(tmp_path / "latents")
    assert z.shape[1] == 512 and tokens.shape[1:] == (64, 512)  # z 512; 8 x 8 patch tokens of 512 channels

    train_densenet(cfg["densenet"], prepared, tmp_path / "densenet", tmp_path / "densenet.parquet", seed=0,
                   device_name="cpu")
    assert len(read_predictions(tmp_path / "densenet.parquet"))

    assert cfg["prm"]["recon_k"] == 3 and cfg["prm"]["slots"] == 16 and cfg["prm"]["queries"] == 4
    model = train_prm(cfg["prm"], prepared, tmp_path / "latents", dae, tmp_path / "prm", tmp_path / "prm.parquet", seed=0,
                      device_name="cpu")
    prm = load_prm(model)
    assert prm.d == 512 and prm.slots.shape == (16, 512) and prm.pool.queries.shape == (4, 512)
    with np.load(tmp_path / "prm" / "trajectories.npz") as traj:
        assert traj["P"].shape[1] == traj["z"].shape[1] == 512
