"""`lvdr decode`: one trained LVDR run's reasoning made visible, with the checks that say whether to believe it.

For the run's test sequences (at most ``max_sequences``, drawn with the seed): decoded reasoning states
(``decoding``), the pixel-wise sd of stochastic decodes of z_sem, and counterfactuals along the grade
direction (``counterfactuals``). Writes figures and ``summary.json`` (numbers, verdicts) to the out folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lvdr.data import load_prepared
from lvdr.explain.counterfactuals import counterfactual_figure, counterfactuals, fit_grade_direction
from lvdr.explain.decoding import central_rows, decoded_states, fixed_noise, inside_outside, states_figure, stochastic_spread
from lvdr.explain.plots import pick
from lvdr.explain.trajectories import load_trajectories
from lvdr.explain.verdicts import counterfactual_verdict, decoding_verdict
from lvdr.files import write_json

log = logging.getLogger(__name__)


def visualise(run: str | Path, diffae_path: str | Path, classifier_path: str | Path, prepared_dir: str | Path,
              out_dir: str | Path, seed: int, max_sequences: int = 64, samples: int = 8, eta: float = 1.0) -> dict:
    from lvdr.baselines.latent import load_linear
    from lvdr.diffae.train import load_model
    from lvdr.prm.train import load_prm

    run, out_dir = Path(run), Path(out_dir)
    data = load_prepared(prepared_dir)
    name = data.meta["dataset"]
    trajs = load_trajectories(run / "trajectories.npz")
    if trajs and trajs[0]["z"] is None:
        raise ValueError(f"{run / 'trajectories.npz'}: holds no per-step latents z_t (written by an older lvdr); retrain the PRM")
    test, train = [t for t in trajs if t["split"] == "test"], [t for t in trajs if t["split"] == "train"]
    rng = np.random.default_rng([seed, 11])
    if len(test) > max_sequences:
        test = [test[i] for i in np.sort(rng.choice(len(test), max_sequences, replace=False))]
    prm = load_prm(run / "model.pt")
    diffae, cfg = load_model(diffae_path)
    classifier, _ = load_linear(classifier_path)
    steps = cfg["ddim_steps"]
    rows = central_rows(test)
    masks = None if data.masks is None else data.masks[rows]
    log.info("%s: decoding %d test sequences of %s (%d DDIM steps)", name, len(test), run, steps)
    x_t = fixed_noise(diffae, data.slices, rows, cfg, steps)
    states = decoded_states(prm, diffae, classifier, test, x_t, cfg, steps, prm.threshold)
    direction, step = fit_grade_direction(train)
    cf = counterfactuals(prm, diffae, classifier, test, x_t, direction, step, cfg, steps, masks, prm.threshold,
                         recon=np.stack([images[-1] for images in states["images"]]))
    index = {t["seq_id"]: i for i, t in enumerate(test)}
    shown = [index[t["seq_id"]] for t in pick(test, 1, seed)]  # one per grade, in the figures
    z_sem = np.stack([test[i]["z"][-1] for i in shown])
    spread = stochastic_spread(diffae, x_t[shown], z_sem, cfg, steps, samples, eta, seed) if samples > 1 else None
    if spread is not None:
        states_figure(shown, test, states, data.slices, spread, out_dir / "decoded.png",
                      f"{name}: decoded reasoning states (PRM's grade / the decode's grade, re-encoded)")
    counterfactual_figure(shown, test, cf, data.slices, rows, out_dir / "counterfactuals.png",
                          f"{name}: counterfactuals along the grade direction")
    summary = {
        "dataset": name, "run": run.name, "ddim_steps": steps,
        "decoding": {k: v for k, v in states.items() if k not in ("images", "per_sequence")},
        "stochastic": None if spread is None else {"samples": samples, "eta": eta, "n_sequences": len(shown),
                                                   "pixel_sd": inside_outside(spread.mean(1), None if masks is None else masks[shown])},
        "counterfactuals": {k: v for k, v in cf.items() if k not in ("images", "per_sequence")},
        "per_sequence": [{**s, "counterfactual": c} for s, c in zip(states["per_sequence"], cf["per_sequence"])],
        "verdicts": {"decoding": decoding_verdict(states), "counterfactual": counterfactual_verdict(cf)},
        "figures": (["decoded.png"] if spread is not None else []) + ["counterfactuals.png"],
    }
    for key, (word, sentence) in summary["verdicts"].items():
        log.info("%s %s: %s (%s)", name, key, word, sentence)
    write_json(out_dir / "summary.json", summary)
    return summary

