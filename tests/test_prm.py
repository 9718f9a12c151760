"""Stage 2: the PRM's invariances, losses, its T = 1 path, and the training loop."""

import logging
import shutil

import numpy as np
import pytest
import torch

from lvdr import config as configs
from lvdr.prm.model import PRM
from lvdr.prm.train import Sequence, even_subsample, losses, movement_loss, recon_loss, step_loss, trajectory_loss

K, C, D, Z = 4, 6, 16, 8  # tokens per slice, token channels, model width, slice-latent width


def prm_config(**changes):
    cfg = configs.validate({"prm": {"slots": 5, "heads": 4, "queries": 2, **changes}})["prm"]
    return cfg


def inputs(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    tokens = torch.randn(len(lengths), t, K, C, generator=g)
    depth = torch.arange(t, dtype=torch.float32).expand(len(lengths), t).clone()
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    codes = torch.randn(len(lengths), t, Z, generator=g)
    return tokens, depth, mask, codes


def test_padding_does_not_change_a_sequence():
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(), Z).eval()
    tokens, depth, mask, codes = inputs([3, 7, 5])
    with torch.no_grad():
        alone = model(tokens[:1, :3], depth[:1, :3], mask[:1, :3], codes[:1, :3], latents=True)
        batched = model(tokens, depth, mask, codes, latents=True)
    torch.testing.assert_close(alone["logits"][0], batched["logits"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone["z_sem"][0], batched["z_sem"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone["P"][0], batched["P"][0, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched["P"][0, 3:], batched["P"][0, 2:3].expand(4, -1))  # padding repeats the state


def test_a_pass_given_the_inputs_reads_is_the_pass_that_reads_them():
    """MC dropout reads each batch once and runs every pass on that read: the passes must draw and compute
    exactly what a pass reading the inputs itself would."""
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(), Z).train()
    tokens, depth, mask, codes = inputs([3, 7, 5])
    with torch.no_grad():
        reads = model.read(tokens, depth, codes)
        torch.manual_seed(1)
        given = [model(tokens, depth, mask, codes, reads=reads)["logits"] for _ in range(2)]
        torch.manual_seed(1)
        own = [model(tokens, depth, mask, codes)["logits"] for _ in range(2)]
    assert torch.equal(given[0], own[0]) and torch.equal(given[1], own[1]) and not torch.equal(own[0], own[1])


@pytest.mark.parametrize("embedded", [True, False])
def test_the_depth_embedding_tells_where_a_slice_lies_only_when_on(embedded):
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(depth_embedding=embedded), Z).eval()
    tokens, depth, mask, codes = inputs([4, 4])
    with torch.no_grad():
        here = model(tokens, depth, mask, codes)["logits"]
        moved = model(tokens, depth * 3 + 7, mask, codes)["logits"]
    assert torch.equal(here, moved) is not embedded


def test_pooling_is_invariant_to_slot_order():
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(), Z).eval()
    slots = torch.randn(2, 5, D)
    permuted = slots[:, torch.randperm(5)]
    with torch.no_grad():
        torch.testing.assert_close(model.pool(slots), model.pool(permuted), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(PRM._mean(slots, None), PRM._mean(permuted, None))


def test_attention_computes_what_torch_multihead_attention_computes():
    from lvdr.prm.model import Attention

    torch.manual_seed(0)
    mine, theirs = Attention(D, 4).eval(), torch.nn.MultiheadAttention(D, 4, batch_first=True).eval()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([mine.q.weight, mine.kv.weight]))
        theirs.in_proj_bias.copy_(torch.cat([mine.q.bias, mine.kv.bias]))
        theirs.out_proj.weight.copy_(mine.out.weight)
        theirs.out_proj.bias.copy_(mine.out.bias)
        x, tokens = torch.randn(3, 5, D), torch.randn(3, 7, D)
        keep = torch.rand(3, 7) > 0.3
        keep[:, 0] = True
        expected = theirs(x, tokens, tokens, key_padding_mask=~keep, need_weights=False)[0]
        torch.testing.assert_close(mine(x, *mine.project_kv(tokens), keep=keep), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("update", ["gru", "layernorm", "none"])
def test_memory_update_bounds_the_state_only_where_promised(update):
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(memory_update=update, dropout=0.0, stochastic_depth=0.0), Z).eval()
    tokens, depth, mask, codes = inputs([30, 30, 30])
    with torch.no_grad():
        norms = model(5 * tokens, depth, mask, codes)["P"].norm(dim=-1)  # (B, T)
    if update == "gru":  # bounded by the GRU's tanh range, but free to vary between steps and sequences
        assert norms.max() <= D**0.5 and norms.std() > 0.02
    elif update == "layernorm":  # the mean of unit-variance slots: pinned near a constant
        assert norms.max() <= D**0.5 + 1e-3
    else:
        assert norms[:, -1].mean() > norms[:, 0].mean()


def test_gru_keeps_its_memory_when_the_gate_says_so():
    torch.manual_seed(0)
    cfg = prm_config(dropout=0.0, stochastic_depth=0.0, gru_keep_bias=50.0)  # update gate saturated at "keep"
    model = PRM(C, K, D, 5, cfg, Z).eval()
    tokens, depth, mask, codes = inputs([6])
    with torch.no_grad():
        P = model(tokens, depth, mask, codes)["P"][0]
    torch.testing.assert_close(P, torch.zeros(6, D), atol=1e-5, rtol=1e-5)  # where it started: P_0, the origin


@pytest.mark.parametrize("centred", [True, False])
def test_every_trajectory_starts_at_the_origin_when_the_slots_are_centred(centred):
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(centre_slots=centred), Z).eval()
    with torch.no_grad():
        model.slots.add_(3.0)  # slots with a large common offset, as training can leave them
        P0 = model(*inputs([4, 2]))["P0"]
    if centred:  # ||P_t|| is then the distance travelled from the common start
        torch.testing.assert_close(P0, torch.zeros(2, D), atol=1e-6, rtol=0)
        assert model.start_memory().norm(dim=1).min() > 0.1  # centred, not collapsed: the slots still differ
    else:
        torch.testing.assert_close(P0, model.slots.mean(0).expand(2, D))
        assert P0.norm(dim=1).min() > 10


def test_checkpoint_selection_rules():
    from lvdr.prm.train import improves

    row = {"step": 40, "val_score": 0.5, "val_loss": 1.2}
    assert improves("val_metric", "ordinal", row, 0.6) == (True, 0.5)  # MAE: lower is better
    assert improves("val_metric", "binary", row, 0.6) == (False, 0.5)  # AUC: higher is better
    assert improves("val_loss", "binary", row, 1.0) == (False, 1.2)
    assert improves("last", "ordinal", row, 20) == (True, 40)


def test_single_slice_sequences_run():
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(), Z)
    tokens, depth, mask, codes = inputs([1, 1])
    out = model(tokens, depth, mask, codes, latents=True)
    assert out["P"].shape == (2, 1, D) and out["z"].shape == (2, 1, D) and out["logits"].shape == (2, 5)
    assert trajectory_loss(out["P"], mask).item() == 0.0
    model.eval()  # P_0, where L_move's first step starts, is the mean of the slots M_0
    torch.testing.assert_close(model(tokens, depth, mask, codes)["P0"], model.start_memory().mean(0).expand(2, D))


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


def test_movement_loss_is_the_mean_step_length_of_real_steps_from_the_start():
    mask = torch.arange(4)[None] < torch.tensor([4, 2, 1])[:, None]
    start = torch.zeros(3, 2)
    P = torch.zeros(3, 4, 2)
    P[0, 1:, 0] = torch.tensor([3.0, 3.0, 7.0])  # steps 0 (from the start), 3, 0, 4: mean 7 / 4
    P[1, 1] = torch.tensor([3.0, 4.0])  # steps 0 and 5; its padded steps repeat the last state
    P[1, 2:] = P[1, 1]
    P[2] = torch.tensor([6.0, 8.0])  # a one-slice sequence: its one step, 10 from the start; the rest is padding
    P.requires_grad_(True)
    loss = movement_loss(P, mask, start)
    torch.testing.assert_close(loss, torch.tensor((7 / 4 + 5 / 2 + 10) / 3))
    loss.backward()  # zero-length steps (held states, padding) must not give NaN gradients
    assert torch.isfinite(P.grad).all()
    held = torch.randn(3, 1, D).expand(3, 4, D)
    assert movement_loss(held, mask, held[:, 0]).item() == 0.0
    assert movement_loss(held, mask, held[:, 0] + 1).item() == pytest.approx(D ** 0.5 * (1 / 4 + 1 / 2 + 1) / 3, rel=1e-5)
    terms = losses(prm_config(lambda_move=0.5), "ordinal", {"P": P.detach(), "P0": start, "logits": torch.randn(3, 5)},
                   torch.tensor([0, 2, 4]), mask, recon=torch.tensor(0.0), traj_factor=0.5)
    torch.testing.assert_close(terms["total"], 0.5 * terms["traj"] * prm_config()["lambda_traj"] + 0.25 * terms["move"]
                               + terms["ord"])


def test_recon_loss_decodes_a_fraction_of_the_sequences_conditioned_on_their_own_z():
    from monai.networks.schedulers import DDPMScheduler

    seen = []

    def decoder(x, t, z):  # records what it is asked to decode; predicts zero noise
        seen.append((x.shape[0], z.clone()))
        return torch.zeros_like(x)

    slices = np.random.default_rng(0).random((40, 1, 4, 4)).astype(np.float32)
    batch = [Sequence(f"s{i}", "train", 0, 0, np.arange(4 * i, 4 * i + 4), np.arange(4)) for i in range(10)]
    z_sem = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 3)
    scheduler = DDPMScheduler(num_train_timesteps=10)
    np.random.seed(0)
    torch.manual_seed(0)
    full = recon_loss(decoder, scheduler, z_sem, batch, slices, 2, "cpu")
    assert seen[-1][0] == 20 and float(full) == pytest.approx(1.0, abs=0.2)  # E[noise^2] = 1
    half = recon_loss(decoder, scheduler, z_sem, batch, slices, 2, "cpu", fraction=0.5)
    n, z = seen[-1]
    assert n == 10 and torch.isfinite(half)
    owners = z[:, 0].long()  # each decoded slice is conditioned on its own sequence's z_sem, two per sequence
    assert len(set(owners.tolist())) == 5 and all((owners == o).sum() == 2 for o in owners.unique())
    assert recon_loss(decoder, scheduler, z_sem, batch, slices, 1, "cpu", fraction=0.01) is not None
    assert seen[-1][0] == 1  # at least one sequence


def test_step_loss_grades_every_intermediate_state_and_only_those():
    cfg = prm_config(lambda_step=0.5)
    mask = torch.arange(5)[None] < torch.tensor([5, 3, 1])[:, None]
    labels = torch.tensor([2, 0, 1])
    right = torch.full((3, 5, 3), -10.0)
    right[torch.arange(3), :, labels] = 10.0  # every state sure of its sequence's grade
    wrong = right.clone()
    wrong[:, -1] = 0.0  # padded steps and the last real step of the first sequence
    wrong[2] = 0.0  # a one-slice sequence has no intermediate state
    sure = torch.tensor([[-10.0, 10.0]]).expand(3, 5, 2)
    assert step_loss(cfg, "binary", sure, torch.ones(3, dtype=torch.long), mask).item() < 1e-3
    assert step_loss({**cfg, "binary_loss": "focal"}, "binary", sure, torch.zeros(3, dtype=torch.long), mask).item() > 5
    assert step_loss(cfg, "ordinal", right, labels, mask).item() < 1e-3
    torch.testing.assert_close(step_loss(cfg, "ordinal", wrong, labels, mask), step_loss(cfg, "ordinal", right, labels, mask))
    lost = right.clone()
    lost[1, 0] = 0.0  # one intermediate state of a 3-slice sequence is unsure: counted at 1/2 of that sequence
    uniform = torch.nn.functional.cross_entropy(torch.zeros(1, 3), torch.tensor([0])) + cfg["ordinal_alpha"] * 1.0
    torch.testing.assert_close(step_loss(cfg, "ordinal", lost, labels, mask), uniform / 2 / 2, atol=2e-3, rtol=0)
    assert step_loss(cfg, "ordinal", right, labels, torch.arange(5)[None] < torch.ones(3, 1)).item() == 0.0
    out = {"P": torch.randn(3, 5, D), "logits": right[:, 0], "step_logits": lost}
    terms = losses(cfg, "ordinal", out, labels, mask, recon=torch.tensor(0.0))
    torch.testing.assert_close(terms["total"], cfg["lambda_traj"] * terms["traj"] + cfg["lambda_ord"] * terms["ord"]
                               + 0.5 * terms["step"])


def test_tiny_prm_overfits_a_handful_of_sequences():
    torch.manual_seed(0)
    cfg = prm_config(dropout=0.0, slot_dropout=0.0, stochastic_depth=0.0)
    model = PRM(C, K, D, 3, cfg, Z)
    tokens, depth, mask, codes = inputs([4, 6, 3, 5, 2, 6], seed=1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        out = model(tokens, depth, mask, codes)
        loss = torch.nn.functional.cross_entropy(out["logits"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(tokens, depth, mask, codes)["logits"].argmax(1) == labels).all()


def test_a_flipped_sequence_is_read_from_its_other_end_with_mirrored_depths():
    from lvdr.prm.train import Sequence, flip_depth

    s = Sequence("disc", "train", 3, 1, np.array([10, 11, 13, 14]), np.array([0, 2, 9, 13]))
    flipped = flip_depth(s)
    assert flipped.rows.tolist() == [14, 13, 11, 10] and flipped.depth.tolist() == [0, 4, 11, 13]
    assert (flipped.seq_id, flipped.split, flipped.grade, flipped.label_bin) == ("disc", "train", 3, 1)
    assert flip_depth(flipped).rows.tolist() == s.rows.tolist() and s.rows.tolist() == [10, 11, 13, 14]  # the original is untouched
    late = Sequence("slab", "train", 0, 0, np.array([5, 6, 7]), np.array([2, 3, 5]))  # depths keep their span
    assert flip_depth(late).depth.tolist() == [2, 4, 5]


@pytest.mark.parametrize("n,t_max", [(5, 8), (40, 32), (33, 32), (100, 7)])
def test_subsampling_keeps_order_and_endpoints(n, t_max):
    keep = even_subsample(n, t_max)
    assert len(keep) == min(n, t_max)
    assert keep[0] == 0 and keep[-1] == n - 1
    assert np.all(np.diff(keep) > 0)


@pytest.mark.parametrize("precision", ["auto", "fp16"])  # fp16: the GradScaler's state must resume too
def test_training_writes_predictions_trajectories_and_resumes(spider_prepared, diffae_config, tmp_path, precision, kill_at,
                                                              caplog):
    from kill import Killed

    from lvdr.diffae.cache import build_cache
    from lvdr.diffae.train import train as train_diffae
    from lvdr.predictions import read_predictions
    from lvdr.prm.train import train

    dae = train_diffae(diffae_config, spider_prepared, tmp_path / "dae", seed=1, device_name="cpu")
    build_cache(dae, spider_prepared, tmp_path / "latents", batch_size=64, device_name="cpu")
    cfg = {**prm_config(lambda_step=1.0), "recon_k": 2,
           "train": {**prm_config()["train"], "steps": 4, "batch_size": 3, "eval_every": 2, "precision": precision,
                     "flip_depth": 0.5}}  # the flips must resume as drawn too
    run = lambda c, name: train(c, spider_prepared, tmp_path / "latents", dae, tmp_path / name,  # noqa: E731
                                tmp_path / f"{name}.parquet", seed=4, device_name="cpu")
    full = run(cfg, "full")
    kill_at(3)  # after the checkpoint at step 2
    with pytest.raises(Killed):
        run(cfg, "resumed")
    caplog.set_level(logging.INFO)
    resumed = run(cfg, "resumed")
    assert "(step 2)" in caplog.text
    a, b = torch.load(full, weights_only=False)["state_dict"], torch.load(resumed, weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    predictions = read_predictions(tmp_path / "full.parquet")
    assert len(predictions) == 12 and set(predictions.split) <= {"train", "val", "test"}
    with np.load(tmp_path / "full" / "trajectories.npz") as traj:
        assert traj["offsets"][-1] == len(traj["P"]) == len(traj["z"]) == len(traj["row"])
        assert traj["P"].shape[1] == diffae_config["z_dim"]
        first = slice(traj["offsets"][0], traj["offsets"][1])
        assert np.all(np.diff(traj["depth"][first]) > 0)


def test_one_job_trains_several_seeds_each_as_it_would_alone(spider_prepared, diffae_config, tmp_path):
    """`train-prm --seed 4 5` (the pipeline's one job per method) trains seed 5 to the same weights and
    predictions as a run of seed 5 alone, and writes each seed where {seed} in --out says."""
    import yaml

    from lvdr.cli import main
    from lvdr.diffae.cache import build_cache
    from lvdr.diffae.train import train as train_diffae
    from lvdr.predictions import read_predictions

    dae = train_diffae(diffae_config, spider_prepared, tmp_path / "dae", seed=1, device_name="cpu")
    build_cache(dae, spider_prepared, tmp_path / "latents", batch_size=64, device_name="cpu")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"device": "cpu", "prm": {"slots": 5, "heads": 4, "queries": 2, "recon_fraction": 0.5,
                                                                "train": {"steps": 3, "batch_size": 3, "eval_every": 3}}}))
    common = ["train-prm", "spider", "--config", str(config), "--prepared", str(spider_prepared),
              "--latents", str(tmp_path / "latents"), "--diffae", str(dae)]
    assert main([*common, "--seed", "4", "5", "--out", str(tmp_path / "both" / "seed{seed}"),
                 "--predictions", str(tmp_path / "both" / "seed{seed}.parquet")]) == 0
    assert main([*common, "--seed", "5", "--out", str(tmp_path / "alone"), "--predictions", str(tmp_path / "alone.parquet")]) == 0
    a = torch.load(tmp_path / "alone" / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "both" / "seed5" / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_predictions(tmp_path / "alone.parquet").equals(read_predictions(tmp_path / "both" / "seed5.parquet"))
    four = torch.load(tmp_path / "both" / "seed4" / "model.pt", weights_only=False)["state_dict"]
    assert not all(torch.equal(a[k], four[k]) for k in a)  # another seed, another model
    assert set(read_predictions(tmp_path / "both" / "seed4.parquet").seed) == {4}
    # one stage-1 cache per seed (diffae.seeds): seed 5 reads the second, as it would alone
    other = tmp_path / "latents_other"
    shutil.copytree(tmp_path / "latents", other)
    tokens = np.load(other / "tokens.npy")
    np.save(other / "tokens.npy", (tokens[::-1] * 0.5).astype(tokens.dtype))  # another stage 1's tokens
    assert main([*common[:-4], "--latents", str(tmp_path / "latents"), str(other), "--diffae", str(dae), "--seed", "4", "5",
                 "--out", str(tmp_path / "pair" / "seed{seed}"), "--predictions", str(tmp_path / "pair" / "seed{seed}.parquet")]) == 0
    assert main([*common[:-4], "--latents", str(other), "--diffae", str(dae), "--seed", "5", "--out", str(tmp_path / "other"),
                 "--predictions", str(tmp_path / "other.parquet")]) == 0
    c = torch.load(tmp_path / "other" / "model.pt", weights_only=False)["state_dict"]
    d = torch.load(tmp_path / "pair" / "seed5" / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(c[k], d[k]) for k in c) and not all(torch.equal(a[k], c[k]) for k in a)
    e = torch.load(tmp_path / "pair" / "seed4" / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(four[k], e[k]) for k in four)  # seed 4 read the first cache, as before
    assert main([*common, "--seed", "4", "5", "6", "--latents", "x", "y", "--out", str(tmp_path / "bad" / "seed{seed}")]) == 2


def test_several_seeds_into_one_folder_are_refused(capsys):
    from lvdr.cli import main

    assert main(["train-prm", "spider", "--seed", "0", "1", "--out", "results/x"]) == 2
    assert "--out results/x: 2 seeds would all write here; put {seed} in the path" in capsys.readouterr().err


def test_ablation_variant_overrides_the_config():
    cfg = configs.validate({})
    prm, method = configs.variant(cfg, "no_traj")
    assert method == "lvdr_no_traj" and prm["lambda_traj"] == 0.0 and prm["lambda_ord"] == cfg["prm"]["lambda_ord"]
    with pytest.raises(configs.ConfigError, match="no ablation named 'nope'"):
        configs.variant(cfg, "nope")


def test_a_datasets_overrides_apply_to_it_alone_and_under_its_ablations():
    cfg = configs.validate({"prm": {"train": {"steps": 200, "lr": 0.002}, "by_dataset": {"spider": {"train": {"steps": 120}}},
                                    "ablations": {"no_traj": {"lambda_traj": 0.0}, "long": {"train": {"steps": 300}}}}})
    spider, brats = configs.variant(cfg, None, "spider")[0], configs.variant(cfg, None, "brats")[0]
    assert (spider["train"]["steps"], spider["train"]["lr"], brats["train"]["steps"]) == (120, 0.002, 200)
    ablation, method = configs.variant(cfg, "no_traj", "spider")
    assert method == "lvdr_no_traj" and ablation["train"]["steps"] == 120 and ablation["lambda_traj"] == 0.0
    assert configs.variant(cfg, "long", "spider")[0]["train"]["steps"] == 300  # the ablation's own override wins
    # a typo inside an override fails when the config is read, naming the key and where it came from
    with pytest.raises(configs.ConfigError, match=r"'prm\.train\.stepz'; did you mean 'steps'.*prm\.by_dataset\.spider"):
        configs.validate({"prm": {"by_dataset": {"spider": {"train": {"stepz": 120}}}}})
    with pytest.raises(configs.ConfigError, match=r"prm\.by_dataset.*'spidr' is not one of"):
        configs.validate({"prm": {"by_dataset": {"spidr": {"train": {"steps": 120}}}}})


def test_checkpoint_of_another_architecture_is_not_resumed(tmp_path):
    from lvdr.training import Checkpoints, config_hash, model_signature

    old, new = PRM(C, K, D, 5, prm_config(blocks=1), Z), PRM(C, K, D, 5, prm_config(blocks=2), Z)
    Checkpoints(tmp_path, config_hash({"model": model_signature(old)})).save({"step": 3, "model": old.state_dict()})
    assert Checkpoints(tmp_path, config_hash({"model": model_signature(old)})).load()["step"] == 3
    assert Checkpoints(tmp_path, config_hash({"model": model_signature(new)})).load() is None


def _saved_prm_and_cache(tmp_path, lengths):
    """A random PRM saved as train-prm saves it, a token cache, and trajectories of its own test sequences."""
    from lvdr.prm.train import Sequence, load_prm, run_sequences
    from lvdr.training import save_torch

    torch.manual_seed(0)
    cfg = prm_config()
    save_torch({"config": cfg, "state_dict": PRM(C, K, D, 5, cfg, Z).state_dict(), "d": D, "token_shape": (K, C),
                "code_dim": Z, "num_classes": 5}, tmp_path / "model.pt")
    (tmp_path / "latents").mkdir()
    tokens = np.random.default_rng(0).normal(size=(sum(lengths), K, C)).astype(np.float16)
    np.save(tmp_path / "latents" / "tokens.npy", tokens)
    z = np.random.default_rng(1).normal(size=(sum(lengths), Z)).astype(np.float32)
    np.save(tmp_path / "latents" / "z.npy", z)
    starts = np.cumsum([0, *lengths])
    seqs = [Sequence(f"s{i}", "test", i % 5, int(i % 5 > 0), np.arange(starts[i], starts[i + 1]), np.arange(n))
            for i, n in enumerate(lengths)]
    results = run_sequences(load_prm(tmp_path / "model.pt"), seqs, (z, tokens), "cpu")
    return [{"seq_id": s.seq_id, "split": s.split, "grade": s.grade, "P": r["P"], "row": s.rows, "depth": s.depth}
            for s, r in zip(seqs, results)]


def test_deletion_test_compares_largest_steps_with_random_slices(tmp_path, monkeypatch):
    import lvdr.prm.train as prm_train
    from lvdr.explain.deletion import deletion_test

    trajs = _saved_prm_and_cache(tmp_path, [6, 2, 5, 9, 1])
    read = []
    run = prm_train.run_sequences
    monkeypatch.setattr(prm_train, "run_sequences", lambda model, seqs, *a, **k: read.extend(seqs) or run(model, seqs, *a, **k))
    result = deletion_test(trajs, tmp_path / "model.pt", tmp_path / "latents", fraction=0.25, repeats=3, seed=0)
    assert result["n_sequences"] == 3  # sequences of fewer than 3 slices have no step to delete but the last
    assert len(read) == 3 * (2 + 3)
    full = {t["seq_id"]: t for t in trajs}
    for seq in read:  # the first slice is always kept, order is kept, and a deletion removes 25% of the steps
        rows = full[seq.seq_id]["row"]
        assert seq.rows[0] == rows[0] and np.all(np.diff(seq.rows) > 0)
        assert len(seq.rows) in (len(rows), len(rows) - max(1, round(0.25 * (len(rows) - 1))))
    # the largest-step deletion removes exactly the slices after the largest steps
    sizes = np.linalg.norm(np.diff(full["s3"]["P"], axis=0), axis=1)
    top = next(s for s in read[1::5] if s.seq_id == "s3")  # per sequence: all slices, largest steps, 3 random
    assert set(full["s3"]["row"]) - set(top.rows) == set(full["s3"]["row"][np.argsort(-sizes)[:2] + 1])
    again = deletion_test(trajs, tmp_path / "model.pt", tmp_path / "latents", fraction=0.25, repeats=3, seed=0)
    assert again["shift_top"] == result["shift_top"] and again["shift_random"] == result["shift_random"]  # seeded
    assert again["drop_random"] == result["drop_random"]
    # the change is a total variation distance: at least the change in any one class's probability, whatever its sign
    per = result["per_sequence"]
    assert all(0 <= abs(drop) <= shift + 1e-6 <= 1 for drop, shift in zip(per["drop_top"], per["shift_top"]))
    # against the usual positions: one more run per sequence, deleting where the profile is largest
    read.clear()
    profile = np.array([0.1, 0.9, 0.2, 0.8, 0.3])  # typical step at indices 0..4: largest at 1, then 3
    usual = deletion_test(trajs, tmp_path / "model.pt", tmp_path / "latents", fraction=0.25, repeats=3, seed=0,
                          profile=profile)
    assert len(read) == 3 * (3 + 3) and usual["shift_top"] == result["shift_top"] and "p_shift_usual" in usual
    at_usual = next(s for s in read[2::6] if s.seq_id == "s3")  # 9 slices, 8 steps: k = 2, indices 1 and 3 (+ 1)
    assert set(full["s3"]["row"]) - set(at_usual.rows) == set(full["s3"]["row"][[2, 4]])
    assert len(usual["per_sequence"]["shift_usual"]) == 3 == len(usual["per_sequence"]["drop_usual"])


def test_deleting_every_step_is_the_same_for_largest_and_random(tmp_path):
    from lvdr.explain.deletion import deletion_test

    trajs = _saved_prm_and_cache(tmp_path, [4, 7, 3])
    result = deletion_test(trajs, tmp_path / "model.pt", tmp_path / "latents", fraction=1.0, repeats=2, seed=0)
    assert result["per_sequence"]["shift_top"] == result["per_sequence"]["shift_random"]
    assert result["per_sequence"]["drop_top"] == result["per_sequence"]["drop_random"]
    assert result["top_beats_random"] == 0.0 and result["p_shift"] is None and result["p_drop"] is None


def test_inputs_are_standardised_with_the_training_statistics():
    """A shared offset and scale on every input (the same sequences seen through another DiffAE's
    latents) changes nothing once the PRM standardises with the statistics of what it is given."""
    from lvdr.prm.train import channel_statistics

    rng = np.random.default_rng(0)
    array = rng.normal(3.0, 0.05, size=(50, K, C)).astype(np.float16)
    rows = np.arange(0, 50, 2)
    stats = channel_statistics(array, rows, chunk=7)  # chunked reads give the statistics of all rows at once
    picked = array[rows].astype(np.float64).reshape(-1, C)
    np.testing.assert_allclose(stats.numpy(), np.stack([picked.mean(0), picked.std(0)]), rtol=1e-5)
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(), Z).eval()
    tokens, depth, mask, codes = inputs([4, 6])
    unit = (torch.stack([torch.zeros(C), torch.ones(C)]), torch.stack([torch.zeros(Z), torch.ones(Z)]))
    model.set_input_statistics(*unit)
    with torch.no_grad():
        plain = model(tokens, depth, mask, codes)["logits"]
        model.set_input_statistics(torch.stack([torch.full((C,), 5.0), torch.full((C,), 0.1)]),
                                   torch.stack([torch.full((Z,), -2.0), torch.full((Z,), 3.0)]))
        shifted = model(5.0 + 0.1 * tokens, depth, mask, -2.0 + 3.0 * codes)["logits"]
    torch.testing.assert_close(plain, shifted, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pool_norm", [True, False])
def test_the_read_out_sees_the_memorys_scale_only_without_the_pools_layernorm(pool_norm):
    """With a LayerNorm on each slot before pooling, slots scaled by c give the same z, so nothing the head or
    the decoder reads can tell a long trajectory from a short one; without it they can."""
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(pool_norm=pool_norm), Z).eval()
    memory = model.start_memory()[None] + torch.randn(3, *model.slots.shape)
    with torch.no_grad():
        z, z_scaled = model.pool(memory), model.pool(3.0 * memory)
    change = float((z_scaled - z).norm() / z.norm())
    assert (change < 1e-3) if pool_norm else (change > 0.05), change


def test_a_model_saved_before_pool_norm_existed_keeps_its_layernorm():
    cfg = prm_config()
    assert cfg["pool_norm"] is False and isinstance(PRM(C, K, D, 5, cfg, Z).pool.norm, torch.nn.Identity)
    old = {key: value for key, value in cfg.items() if key != "pool_norm"}
    assert isinstance(PRM(C, K, D, 5, old, Z).pool.norm, torch.nn.LayerNorm)


@pytest.mark.parametrize("classes", [2, 5])
@pytest.mark.parametrize("head", ["cumulative", "anchored"])
def test_the_ordinal_heads_give_probabilities_with_ordered_cut_points(head, classes):
    torch.manual_seed(0)
    model = PRM(C, K, D, classes, prm_config(head=head), Z).eval()
    with torch.no_grad():
        model.head.gaps.normal_()  # whatever training does to them, the cut-points stay ordered
        z = 5 * torch.randn(7, D)
        probs = model.grade(z).softmax(-1)
        cuts = model.head.cuts()
    torch.testing.assert_close(probs.sum(-1), torch.ones(7))
    assert (probs > 0).all() and (cuts.diff() > 0).all() and len(cuts) == classes - 1


def test_the_anchored_head_reads_the_start_as_the_lowest_class_and_higher_ones_further_along_its_direction():
    """The anchored head scores a latent from the start's: the memory before any slice is the lowest grade
    (healthy), whatever the weights, and moving along the score's direction raises the grade in order."""
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(head="anchored"), Z).eval()
    with torch.no_grad():
        model.head.first.fill_(-4.0)  # the first cut-point stays above the start's score all the same
        z0 = model.pool(model.start_memory()[None])
        assert model.grade(z0).argmax(-1).item() == 0
        w = model.head.score.weight[0]
        along = z0 + torch.linspace(0, 12, 40)[:, None] * w / w.norm() ** 2  # scores 0 .. 12 above the start
        grades = model.grade(along).argmax(-1)
    assert (grades.diff() >= 0).all() and grades[-1] == 4


def test_a_readout_trajectory_is_the_graded_latent_less_the_starts():
    torch.manual_seed(0)
    model = PRM(C, K, D, 5, prm_config(trajectory="readout", head="anchored"), Z).eval()
    tokens, depth, mask, codes = inputs([4, 2])
    with torch.no_grad():
        out = model(tokens, depth, mask, codes, latents=True)
        z0 = model.pool(model.start_memory()[None])
    torch.testing.assert_close(out["P"], out["z"] - z0)
    torch.testing.assert_close(out["P0"], torch.zeros(2, D))
    torch.testing.assert_close(out["P"][1, 2:], out["P"][1, 1:2].expand(2, D))  # padded steps repeat the last state
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, depth, mask, codes)["P"], out["P"])  # with or without the latents


def test_a_model_saved_before_head_and_trajectory_existed_reads_as_it_did():
    old = {key: value for key, value in prm_config().items() if key not in ("head", "trajectory")}
    model = PRM(C, K, D, 5, old, Z)
    assert isinstance(model.head, torch.nn.Linear) and model.trajectory == "slots"
