"""`lvdr grade`: a trained model (an `lvdr export` bundle) applied to a new scan, with its explanation.

The scan goes through exactly the stage's own preprocessing (``lvdr.prepare.spider.extract_series``
for a SPIDER-style T2 ``.mha`` with its mask and a disc label, ``lvdr.prepare.brats.extract_case`` for
a FLAIR volume), the stage-1 encoder (tokens rounded to float16, as the latent cache stores them) and
the PRM, so that a case the pipeline saw gets the pipeline's probabilities. Per sequence (one disc;
one BraTS volume or each of its slabs, as the model was trained): the grade, class probabilities,
MC-dropout uncertainty and the trajectory, in ``grade.json``; and one self-contained
``explanation.html`` with the slices read, step sizes, decoded states, counterfactuals and uncertainty.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from lvdr.errors import DataError
from lvdr.files import atomic_path, write_json

log = logging.getLogger(__name__)

OTHER_MODALITIES = {  # file-name endings of the sequences each kind of bundle was not trained on
    "spider": ("_t1.mha", "_t2_SPACE.mha"),
    "brats": ("_t1.nii.gz", "_t1ce.nii.gz", "_t2.nii.gz", "_seg.nii.gz", "-t1n.nii.gz", "-t1c.nii.gz", "-t2w.nii.gz",
              "-seg.nii.gz"),
}
EXPECTED = {"spider": "a sagittal T2 MRI (.mha, SPIDER's *_t2.mha) with its mask", "brats": "a FLAIR volume"}


def check_modality(scan: Path, dataset: str) -> None:
    """Refuse a scan whose name says it is another sequence than the bundle was trained on."""
    for ending in OTHER_MODALITIES.get(dataset, ()):
        if scan.name.endswith(ending):
            raise DataError(f"{scan}: the name says {ending.strip('_-').split('.')[0]}, but this {dataset} bundle "
                            f"grades {EXPECTED[dataset]}")


def sequences_of(scan: Path, dataset: str, cfg: dict, mask: Path | None, disc: int | None, channel: int | None):
    """The scan's sequences as the stage prepares them: [(seq_id, slices (n, C, H, W) float16, mask (n, H, W) or None)]."""
    prepare = cfg[dataset]["prepare"]
    if dataset == "spider":
        from lvdr.prepare.spider import extract_series

        if mask is None or disc is None:
            raise DataError(f"{scan}: a SPIDER bundle grades one disc: give its mask (--mask) and IVD label (--disc)")
        series = scan.name.removesuffix(".mha")
        parts, skipped = extract_series({"series": series, "evidence": None, "image": scan, "mask": mask,
                                         "image_name": scan.name, "cfg": prepare,
                                         "discs": [{"patient": series, "ivd_label": disc, "grade": -1, "split": "new"}]})
        if skipped:
            raise DataError(f"{mask}: {skipped[0]['reason']}; nothing to grade")
        return [(table.seq_id.iloc[0], slices, masks) for slices, table, masks in parts]
    if dataset == "brats":
        from lvdr.prepare.brats import extract_case, sequences

        from lvdr.fetch.brats import LAYOUTS

        suffix = next((s for s, *_ in LAYOUTS.values() if s and scan.name.endswith(s)), None)
        case_id = scan.name.removesuffix(suffix) if suffix else scan.name.split(".")[0]  # BraTS2021_00016_flair.nii.gz: BraTS2021_00016
        case = extract_case({"case_id": case_id, "flair": scan, "seg": None, "source": scan.name, "channel": channel,
                             "edema_label": -1, "cfg": prepare})
        if "skipped" in case:
            raise DataError(case["skipped"])
        return [(table.seq_id.iloc[0], slices, None) for slices, table, _ in sequences(case, case_id, prepare)]
    raise DataError(f"a {dataset} bundle has no multi-slice model to grade with")


def grade_sequence(bundle, seq_id: str, slices: np.ndarray, mask, passes: int, seed: int, out_dir: Path) -> tuple[dict, dict]:
    """One sequence graded and explained: its grade.json entry and what the explanation page shows.
    ``mask`` (n, H, W): the graded region in each slice (SPIDER's disc), for the counterfactual's proximity."""
    from lvdr.diffae.cache import encode_slices
    from lvdr.explain.counterfactuals import counterfactual_figure, counterfactuals
    from lvdr.explain.decoding import decoded_states, fixed_noise, states_figure, stochastic_spread
    from lvdr.explain.trajectories import step_sizes, steps_figure
    from lvdr.explain.uncertainty import mc_dropout_probabilities, predictive_entropy
    from lvdr.predictions import decide
    from lvdr.prm.train import Sequence, even_subsample, run_sequences
    from lvdr.report.figures import png_uri

    prm, diffae, cfg = bundle.prm, bundle.diffae, bundle.diffae_config
    features = encode_slices(diffae, slices)
    keep = even_subsample(len(slices), bundle.config["prm"]["t_max"])
    seq = Sequence(seq_id, "new", -1, -1, keep, keep)
    result = run_sequences(prm, [seq], features, "cpu")[0]
    probs = result["probs"]
    grade = int(decide(probs[None], prm.threshold)[0])
    entry = {"sequence": seq_id, "slices": len(slices), "slices_read": keep.tolist(), "grade": grade,
             "probabilities": probs.round(6).tolist(), "threshold": prm.threshold}
    if passes:
        draws = mc_dropout_probabilities(prm, [seq], features, passes, seed)
        entry["uncertainty"] = {"passes": passes, "entropy": float(predictive_entropy(draws)[0]),
                                "probability_sd": draws[:, 0].std(0).round(6).tolist()}
    entry["trajectory"] = {"norm": np.linalg.norm(result["P"], axis=1).round(5).tolist(),
                           "step_size": step_sizes(result["P"]).round(5).tolist(),
                           "P": result["P"].round(5).tolist(), "z": result["z"].round(5).tolist()}
    traj = {"seq_id": seq_id, "grade": grade, "P": result["P"], "z": result["z"], "row": keep}
    steps = cfg["ddim_steps"]
    central = np.array([keep[len(keep) // 2]])
    x_t = fixed_noise(diffae, slices, central, cfg, steps)
    states = decoded_states(prm, diffae, bundle.classifier, [traj], x_t, cfg, steps, prm.threshold)
    spread = stochastic_spread(diffae, x_t, result["z"][-1:], cfg, steps, 8, 1.0, seed)
    cf = counterfactuals(prm, diffae, bundle.classifier, [traj], x_t, bundle.direction, bundle.step, cfg, steps,
                         None if mask is None else mask[central], prm.threshold, recon=states["images"][0][-1:])
    entry["decoded"] = {"grade_by_step": states["per_sequence"][0]["own"], "decoded_grade_by_step": states["per_sequence"][0]["reread"],
                        "pixel_sd": float(spread.mean())}
    entry["counterfactual"] = {**{k: v for k, v in cf["per_sequence"][0].items() if k not in ("seq_id", "grade")},
                               "moves": cf["moves"]}
    page = {"entry": entry, "figures": []}
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        scratch = Path(scratch)
        steps_figure([traj], slices, np.full(len(slices), np.nan), scratch / "steps.png", f"{seq_id}: step size and the slice read")
        states_figure([0], [traj], states, slices, spread, scratch / "decoded.png", f"{seq_id}: decoded reasoning states",
                      grade_name="graded")
        counterfactual_figure([0], [traj], cf, slices, central, scratch / "cf.png", f"{seq_id}: counterfactuals", known=False)
        page["figures"] = [png_uri(scratch / f) for f in ("steps.png", "decoded.png", "cf.png")]
    return entry, page


def grade(scan, bundle_dir, out_dir, mask=None, disc: int | None = None, channel: int | None = None,
          passes: int | None = None, seed: int = 0) -> dict:
    """Grade ``scan`` with the bundle in ``bundle_dir``; write ``grade.json`` and ``explanation.html`` to ``out_dir``."""
    import jinja2

    from lvdr import bundle as bundles

    scan, out_dir = Path(scan), Path(out_dir)
    loaded = bundles.load(bundle_dir)
    check_modality(scan, loaded.dataset)
    seqs = sequences_of(scan, loaded.dataset, loaded.config, None if mask is None else Path(mask), disc, channel)
    passes = loaded.config["explain"]["uncertainty"]["passes"] if passes is None else passes
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, pages = [], []
    for seq_id, slices, masks in seqs:
        entry, page = grade_sequence(loaded, seq_id, slices, masks, passes, seed, out_dir)
        entries.append(entry)
        pages.append(page)
        log.info("%s: grade %d, probabilities %s", seq_id, entry["grade"], ", ".join(f"{p:.3f}" for p in entry["probabilities"]))
    summary = {"scan": str(scan), "mask": None if mask is None else str(mask), "disc": disc, "bundle": str(bundle_dir),
               "dataset": loaded.dataset, "task": loaded.task, "sequences": entries}
    if loaded.task == "binary" and len(entries) > 1:  # slabs: the volume shows edema where any slab does
        summary["volume"] = {"positive": any(e["grade"] == 1 for e in entries),
                             "max_probability": max(e["probabilities"][1] for e in entries)}
    write_json(out_dir / "grade.json", summary)
    env = jinja2.Environment(loader=jinja2.PackageLoader("lvdr.report", "templates"), autoescape=True)
    html = env.get_template("explanation.html.j2").render(summary=summary, pages=pages)
    with atomic_path(out_dir / "explanation.html") as tmp:
        tmp.write_text(html)
    log.info("grade.json and explanation.html written to %s", out_dir)
    return summary
