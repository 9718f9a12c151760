"""Stage 2: the PRM's invariances, losses, its T = 1 path, and the training loop."""

import numpy as np
import pytest
import torch

from lvdr import config as configs
from lvdr.prm.model import PRM
from lvdr.prm.train import even_subsample, losses, trajectory_loss

K, C, D = 4, 6, 16  # tokens per slice, token channels, model width


def prm_config(**changes):
    cfg = configs.validate({"prm": {"slots": 5, "heads": 4, "queries": 2, **changes}})["prm"]
    return cfg


def inputs(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    tokens = torch.randn(len(lengths), t, K, C, generator=g)
    depth = torch.arange(t, dtype=torch.float32).expand(len(lengths), t).clone()
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    return tokens, depth, mask


def test_padding_does_not_change_a_sequence():
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config()).eval()
    tokens, depth, mask = inputs([3, 7, 5])
    with torch.no_grad():
        alone = model(tokens[:1, :3], depth[:1, :3], mask[:1, :3], latents=True)
        batched = model(tokens, depth, mask, latents=True)
    torch.testing.assert_close(alone["logits"][0], batched["logits"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone["z_sem"][0], batched["z_sem"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone["P"][0], batched["P"][0, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched["P"][0, 3:], batched["P"][0, 2:3].expand(4, -1))  # padding repeats the state


def test_pooling_is_invariant_to_slot_order():
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config()).eval()
    slots = torch.randn(2, 5, D)
    permuted = slots[:, torch.randperm(5)]
    with torch.no_grad():
        torch.testing.assert_close(model.pool(slots), model.pool(permuted), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(PRM._mean(slots, None), PRM._mean(permuted, None))


def test_single_slice_sequences_run():
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config())
    tokens, depth, mask = inputs([1, 1])
    out = model(tokens, depth, mask, latents=True)
    assert out["P"].shape == (2, 1, D) and out["z"].shape == (2, 1, D) and out["logits"].shape == (2, 5)
    assert trajectory_loss(out["P"], mask).item() == 0.0


def test_losses_are_finite_and_traj_is_zero_for_a_constant_trajectory():
    cfg = prm_config()
    P = torch.randn(3, 1, D).expand(3, 6, D)
    mask = torch.arange(6)[None] < torch.tensor([6, 4, 2])[:, None]
    assert trajectory_loss(P, mask).abs().item() < 1e-6
    moving = torch.randn(3, 6, D)
    assert trajectory_loss(moving, mask).item() > 0.1
    out = {"P": moving, "logits": torch.randn(3, 5)}
    terms = losses(cfg, "ordinal", out, torch.tensor([0, 2, 4]), mask, recon=torch.tensor(0.5))
    assert all(torch.isfinite(v) for v in terms.values())
    expected = 0.5 + cfg["lambda_traj"] * terms["traj"] + cfg["lambda_ord"] * terms["ord"]
    torch.testing.assert_close(terms["total"], expected)
    binary = losses({**cfg, "binary_loss": "focal"}, "binary", {"P": moving, "logits": torch.randn(3, 2)},
                    torch.tensor([0, 1, 1]), mask, recon=torch.tensor(0.0))
    assert "cls" in binary and torch.isfinite(binary["total"])


def test_tiny_prm_overfits_a_handful_of_sequences():
    torch.manual_seed(0)
    cfg = prm_config(dropout=0.0, slot_dropout=0.0, stochastic_depth=0.0)
    model = PRM(C, K, D, 3, cfg)
    tokens, depth, mask = inputs([4, 6, 3, 5, 2, 6], seed=1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        out = model(tokens, depth, mask)
        loss = torch.nn.functional.cross_entropy(out["logits"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(tokens, depth, mask)["logits"].argmax(1) == labels).all()


@pytest.mark.parametrize("n,t_max", [(5, 8), (40, 32), (33, 32), (100, 7)])
def test_subsampling_keeps_order_and_endpoints(n, t_max):
    keep = even_subsample(n, t_max)
    assert len(keep) == min(n, t_max)
    assert keep[0] == 0 and keep[-1] == n - 1
    assert np.all(np.diff(keep) > 0)


def test_training_writes_predictions_trajectories_and_resumes(spider_prepared, diffae_config, tmp_path):
    from lvdr.diffae.cache import build_cache
    from lvdr.diffae.train import train as train_diffae
    from lvdr.predictions import read_predictions
    from lvdr.prm.train import train

    dae = train_diffae(diffae_config, spider_prepared, tmp_path / "dae", seed=1, device_name="cpu")
    build_cache(dae, spider_prepared, tmp_path / "latents", batch_size=64, device_name="cpu")
    cfg = {**prm_config(), "recon_k": 2, "train": {**prm_config()["train"], "steps": 4, "batch_size": 3, "eval_every": 2}}
    half = {**cfg, "train": {**cfg["train"], "steps": 2}}
    run = lambda c, name: train(c, spider_prepared, tmp_path / "latents", dae, tmp_path / name,  # noqa: E731
                                tmp_path / f"{name}.parquet", seed=4, device_name="cpu")
    full = run(cfg, "full")
    run(half, "resumed")
    resumed = run(cfg, "resumed")
    a, b = torch.load(full, weights_only=False)["state_dict"], torch.load(resumed, weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    predictions = read_predictions(tmp_path / "full.parquet")
    assert len(predictions) == 12 and set(predictions.split) <= {"train", "val", "test"}
    with np.load(tmp_path / "full" / "trajectories.npz") as traj:
        assert traj["offsets"][-1] == len(traj["P"]) == len(traj["z"]) == len(traj["row"])
        assert traj["P"].shape[1] == diffae_config["z_dim"]
        first = slice(traj["offsets"][0], traj["offsets"][1])
        assert np.all(np.diff(traj["depth"][first]) > 0)


def test_ablation_variant_overrides_the_config():
    cfg = configs.validate({})
    prm, method = configs.variant(cfg, "no_traj")
    assert method == "lvdr_no_traj" and prm["lambda_traj"] == 0.0 and prm["lambda_ord"] == cfg["prm"]["lambda_ord"]
    with pytest.raises(configs.ConfigError, match="no ablation named 'nope'"):
        configs.variant(cfg, "nope")


def test_checkpoint_of_another_architecture_is_not_resumed(tmp_path):
    from lvdr.training import Checkpoints, config_hash, model_signature

    old, new = PRM(C, K, D, 5, prm_config(blocks=1)), PRM(C, K, D, 5, prm_config(blocks=2))
    Checkpoints(tmp_path, config_hash({"model": model_signature(old)})).save({"step": 3, "model": old.state_dict()})
    assert Checkpoints(tmp_path, config_hash({"model": model_signature(old)})).load()["step"] == 3
    assert Checkpoints(tmp_path, config_hash({"model": model_signature(new)})).load() is None
