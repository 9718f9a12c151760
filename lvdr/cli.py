"""The ``lvdr`` command line: one subcommand per pipeline stage.

Snakemake calls these same commands, so every stage also runs, and is tested, on its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from lvdr import DATASETS, __version__
from lvdr import config as configs
from lvdr import log as logs
from lvdr.errors import ConfigError, DataError, LvdrError

log = logging.getLogger("lvdr")

DESCRIPTION = """\
Latent Visual Diffusion Reasoning: explainable pathology grading from multi-slice scans.

The usual way to run everything is the Snakemake pipeline
    snakemake --cores 8 results/report.html
which calls these subcommands in order; each can also be run by hand:
    lvdr fetch spider      raw data (demo generator, download or local folder) -> data/raw/spider/
    lvdr prepare spider    slices and the slice table -> data/prepared/spider/
    lvdr train-diffae spider   stage 1 diffusion autoencoders, one per seed -> results/spider/diffae/seed*/
    lvdr cache spider      z and patch tokens of every slice -> results/spider/latents/seed*/
    lvdr baseline spider diffae_lr diffae_svm   DiffAE+LR and +SVM -> results/spider/predictions/
    lvdr train-densenet spider        DenseNet121 slice baseline -> results/spider/predictions/
    lvdr train-prm spider  stage 2, the Progressive Refinement Module (LVDR) -> results/spider/lvdr/
    lvdr explain spider    trajectory figures, step size vs evidence -> results/spider/explain/
    lvdr decode spider     decoded reasoning states and counterfactuals, checked -> results/spider/decoded/
    lvdr evaluate spider --predictions results/spider/predictions/*.parquet results/spider/predictions/*/*.parquet
                           metrics with patient-bootstrap intervals -> results/spider/metrics.json,
                           and per method metrics/*.json and roc/*.csv for `dvc metrics show` / `dvc plots show`
    lvdr report            all datasets -> results/report.html
    lvdr export spider     pack the trained model for grading new scans -> results/spider/bundle/
    lvdr grade SCAN --model results/spider/bundle --mask MASK --disc 3
                           grade and explain a new scan -> grade.json, explanation.html
Configs are YAML files validated against workflow/schemas/config.schema.yaml;
`lvdr config` prints the resolved config with every default filled in.
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", action="append", metavar="FILE",
                        help="config YAML; repeat to layer files, later ones win (default: config/config.yaml "
                             "if it exists, else the built-in defaults)")
    parser.add_argument("--log", metavar="FILE", help="also write the log to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug-level logging")


def _threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads / worker processes to use (default 1; capped at the machine's cores)")


def _prepared(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prepared", metavar="DIR", help="prepared dataset (default: data/prepared/DATASET)")


def _stage1_seeds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, nargs="+", metavar="N",
                        help="stage-1 seed, or several, one after the other in this process (default: every seed "
                             "the config trains stage 1 with: seed, seed + 1, ... for diffae.seeds models on the "
                             "datasets LVDR trains on, the seed alone elsewhere)")


def _per_run(parser: argparse.ArgumentParser, option: str, what: str, default: str) -> None:
    """An option that names one stage-1 file or folder for every run, or one for each (in the runs' order)."""
    parser.add_argument(option, nargs="+", metavar="PATH",
                        help=f"{what}: one for all runs, or one per run in their order (default: {default}, the "
                             f"stage-1 model that the run's seed reads, lvdr.config.stage1_seed)")


def _dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=DATASETS, help="which dataset")


def _trained(parser: argparse.ArgumentParser) -> None:
    """A trained LVDR run, its stage-1 model and the fitted DiffAE+LR (decode, export)."""
    parser.add_argument("--run", metavar="DIR", help="a trained LVDR run holding trajectories.npz and model.pt "
                                                     "(default: the first results/DATASET/lvdr/seed*/)")
    parser.add_argument("--diffae", metavar="FILE", help="stage-1 model (default: results/DATASET/diffae/seedK/model.pt, "
                                                          "the stage-1 model that the run's seed reads)")
    parser.add_argument("--classifier", metavar="FILE", help="the fitted DiffAE+LR (default: results/DATASET/diffae_lr/"
                                                             "seedK/classifier.json on the same stage 1, written by `lvdr baseline`)")


def per_seed(template: str, seeds: list[int], option: str):
    """The path for each seed: ``template`` with {seed} filled in. Several seeds need the placeholder, or each
    run would overwrite the one before it."""
    if len(seeds) > 1 and "{seed}" not in template:
        raise ConfigError(f"{option} {template}: {len(seeds)} seeds would all write here; put {{seed}} in the path")
    return lambda seed: template.replace("{seed}", str(seed))


def run_seed(run: Path) -> int:
    """The training seed of an LVDR run folder, from its name (seedN, as train-prm names them)."""
    match = re.fullmatch(r"seed(\d+)", Path(run).name)
    if not match:
        raise ConfigError(f"{run}: not named seedN, so its stage-1 model is unknown; give the stage-1 paths explicitly")
    return int(match.group(1))


def diffae_path(dataset: str, stage1: int) -> str:
    """Where the pipeline keeps stage-1 seed ``stage1``'s DiffAE (the Snakefile reads this layout from here too)."""
    return f"results/{dataset}/diffae/seed{stage1}/model.pt"


def latents_path(dataset: str, stage1: int) -> str:
    """Where the pipeline keeps stage-1 seed ``stage1``'s latent cache."""
    return f"results/{dataset}/latents/seed{stage1}"


def classifier_path(dataset: str, stage1: int, root: str | None = None) -> str:
    """Where `lvdr baseline` keeps the DiffAE+LR fitted on stage-1 seed ``stage1``'s latents (under ``root``,
    by default the dataset's results folder); decode and export grade decoded images with it."""
    return f"{root or f'results/{dataset}'}/diffae_lr/seed{stage1}/classifier.json"


def for_runs(given: list[str] | None, runs: list, default, option: str) -> list[str]:
    """One stage-1 path per run: ``given`` (one for all, or one each), else ``default(run)``."""
    if not given:
        return [default(run) for run in runs]
    if len(given) not in (1, len(runs)):
        raise ConfigError(f"{option}: {len(given)} paths for {len(runs)} runs; give one for all or one per run")
    return given * len(runs) if len(given) == 1 else list(given)


def _trained_paths(args, cfg: dict) -> tuple[Path, Path, Path]:
    """``_trained``'s run, DiffAE and classifier, defaults filled in (the stage 1 that the run's seed read); a missing
    run or classifier says what makes it."""
    runs = [Path(args.run)] if args.run else sorted(Path(f"results/{args.dataset}/lvdr").glob("seed*/"))
    if not runs:
        raise DataError(f"results/{args.dataset}/lvdr: no trained LVDR run (seed*/); run `lvdr train-prm {args.dataset}` first")
    stage1 = None if args.diffae and args.classifier else configs.stage1_seed(cfg, run_seed(runs[0]))
    classifier = Path(args.classifier or classifier_path(args.dataset, stage1))
    if not classifier.is_file():
        raise DataError(f"{classifier}: no fitted DiffAE+LR; run `lvdr baseline {args.dataset} diffae_lr` first")
    return runs[0], Path(args.diffae or diffae_path(args.dataset, stage1)), classifier


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvdr", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lvdr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="validate configs and print the resolved config",
                       description="Validate the config files against the schema and print the merged config "
                                   "with every default filled in. A mistyped key fails here, naming the key.")
    _common(p)

    p = sub.add_parser("fetch", help="get raw data: demo generator, download, or a local folder",
                       description="Make raw data available and write OUT/manifest.json pointing at it. "
                                   "The dataset's `source` key chooses: demo (generated, real file formats), "
                                   "zenodo (SPIDER: resumable, checksummed download), folder (BraTS, or a SPIDER "
                                   "copy you already have) or medmnist (RetinaMNIST .npz). Raw files are only read.")
    _dataset(p)
    p.add_argument("--out", metavar="DIR", help="raw-data folder (default: data/raw/DATASET)")
    _common(p)

    p = sub.add_parser("prepare", help="slices + slice table from raw data",
                       description="Turn raw data into OUT/slices.npy (N x C x H x W, float16 in [0, 1]), "
                                   "OUT/slices.parquet (one row per slice: sequence, position, split, grade, "
                                   "provenance) and OUT/prepare.json (counts and skipped items with reasons).")
    _dataset(p)
    p.add_argument("--manifest", metavar="FILE", help="fetch's manifest (default: data/raw/DATASET/manifest.json)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: data/prepared/DATASET)")
    _threads(p)
    _common(p)

    p = sub.add_parser("train-diffae", help="stage 1: train the diffusion autoencoder",
                       description="Train the DiffAE (semantic encoder + z-conditioned noise-predicting UNet) on "
                                   "the train split's slices for the configured number of steps, once per stage-1 seed (diffae.seeds). "
                                   "Resumes from OUT/checkpoints/last.pt after a kill. Writes OUT/model.pt (EMA weights), "
                                   "OUT/curve.csv and OUT/reconstructions.npz, and with --latents the latent cache.")
    _dataset(p)
    _prepared(p)
    _stage1_seeds(p)
    p.add_argument("--out", metavar="DIR", help="output folder; {seed} in it stands for the seed "
                                                "(default: results/DATASET/diffae/seed{seed})")
    p.add_argument("--latents", metavar="DIR", help="then also encode every slice into this latent cache, as `lvdr "
                                                    "cache` would, in the same process (the pipeline does); {seed} as in --out")
    _threads(p)
    _common(p)

    p = sub.add_parser("cache", help="encode every slice to z and 8x8 patch tokens",
                       description="Run the trained semantic encoder over every prepared slice and write "
                                   "OUT/z.npy (N x d), OUT/tokens.npy (N x 64 x c) and OUT/meta.json (hashes of the "
                                   "checkpoint and data; an up-to-date cache is reused).")
    _dataset(p)
    _stage1_seeds(p)
    p.add_argument("--model", metavar="FILE", help="DiffAE model; {seed} in it stands for the stage-1 seed "
                                                   "(default: results/DATASET/diffae/seed{seed}/model.pt)")
    _prepared(p)
    p.add_argument("--out", metavar="DIR", help="output folder; {seed} in it stands for the stage-1 seed "
                                                "(default: results/DATASET/latents/seed{seed})")
    _threads(p)
    _common(p)

    p = sub.add_parser("baseline", help="DiffAE+LR and/or DiffAE+SVM on the cached latents",
                       description="Fit logistic regression (diffae_lr) and/or a calibrated linear SVM (diffae_svm) "
                                   "on standardised slice latents of the train split, choose C on the validation "
                                   "split, average slice probabilities per sequence, and write predictions.")
    _dataset(p)
    p.add_argument("methods", nargs="+", choices=["diffae_lr", "diffae_svm"], metavar="METHOD",
                   help="latent baselines to fit: diffae_lr, diffae_svm or both (one process reads the latents once)")
    _stage1_seeds(p)
    p.add_argument("--latents", metavar="DIR", help="latent cache; {seed} in it stands for the stage-1 seed "
                                                    "(default: results/DATASET/latents/seed{seed})")
    _prepared(p)
    p.add_argument("--out", metavar="DIR", help="folder for METHOD/seedN.parquet, one per stage-1 seed N "
                                                "(default: results/DATASET/predictions)")
    p.add_argument("--models", metavar="DIR", help="where the fitted DiffAE+LR is kept as DIR/diffae_lr/seedN/classifier.json "
                                                   "(default: results/DATASET)")
    _common(p)

    p = sub.add_parser("train-densenet", help="the DenseNet121 slice baseline",
                       description="Train MONAI's DenseNet121 from scratch on the train split's slices (ordinal loss "
                                   "for graded datasets, class-weighted), stop early on validation loss, keep the best "
                                   "weights (OUT/model.pt, OUT/curve.csv; resumes from OUT/checkpoints/last.pt), and "
                                   "write sequence predictions from averaged slice probabilities.")
    _dataset(p)
    _prepared(p)
    p.add_argument("--seed", type=int, metavar="N", help="training seed (default: the config's seed; the pipeline trains "
                                                          "seed, seed + 1, ... for densenet.seeds runs)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: results/DATASET/densenet121/seedN)")
    p.add_argument("--predictions", metavar="FILE",
                   help="predictions (default: results/DATASET/predictions/densenet121/seedN.parquet)")
    _threads(p)
    _common(p)

    p = sub.add_parser("train-prm", help="stage 2: train the Progressive Refinement Module (LVDR)",
                       description="Train the PRM on the cached patch tokens with L_recon (the stage-1 decoder "
                                   "conditioned on z_sem), L_traj and the grading loss, under warm-up and cosine decay; "
                                   "validate and save an EMA of the weights, kept by prm.train.select (best validation "
                                   "MAE or AUC as in the paper, lowest validation loss, or the last); resume after a kill. "
                                   "Writes OUT/model.pt, OUT/curve.csv, OUT/trajectories.npz and the predictions of every "
                                   "sequence (with a `seed` column and, for binary tasks, the decision threshold).")
    _dataset(p)
    known = ", ".join(configs.load_schema()["properties"]["prm"]["properties"]["ablations"]["default"])
    p.add_argument("--variant", metavar="NAME", help=f"an ablation named in the config's prm.ablations (the default config "
                                                     f"has: {known}), trained as method lvdr_NAME; default: LVDR itself")
    p.add_argument("--seed", type=int, nargs="+", metavar="N",
                   help="training seed, or several, trained one after the other in this process (default: the "
                        "config's seed; the pipeline trains seed, seed + 1, ... for prm.seeds runs in one job, "
                        "so that the start-up, about 6 s of imports, is paid once)")
    _prepared(p)
    _per_run(p, "--latents", "latent caches", "results/DATASET/latents/seedK")
    _per_run(p, "--diffae", "stage-1 models, whose decoder L_recon runs", "results/DATASET/diffae/seedK/model.pt")
    p.add_argument("--out", metavar="DIR", help="output folder; {seed} in it stands for the seed "
                                                "(default: results/DATASET/METHOD/seed{seed})")
    p.add_argument("--predictions", metavar="FILE", help="predictions; {seed} in it stands for the seed "
                                                         "(default: results/DATASET/predictions/METHOD/seed{seed}.parquet)")
    _threads(p)
    _common(p)

    p = sub.add_parser("qwen", help="the Qwen2.5-VL baselines: zero-shot, or LoRA-tuned (needs the vlm extra)",
                       description="Ask Qwen2.5-VL (qwen.models[SIZE]: a hub id or a local folder) the paper's question "
                                   "about each validation and test sequence's central slice or collage (qwen.view), "
                                   "through the model's chat template. Class probabilities come from the next-token "
                                   "logits of the grade digits; the written answer is read by a strict parser and the "
                                   "unreadable ones are counted (OUT/answers.csv, OUT/summary.json). --mode finetuned "
                                   "first tunes LoRA adapters on the training split (qwen.finetune), keeps the best on "
                                   "validation (OUT/adapter, OUT/curve.csv) and resumes from OUT/checkpoints/last.pt.")
    _dataset(p)
    p.add_argument("--size", required=True, metavar="LABEL", help="a key of qwen.models, e.g. 3b or 7b")
    p.add_argument("--mode", choices=["zeroshot", "finetuned"], default="zeroshot", help="default: zeroshot")
    _prepared(p)
    p.add_argument("--seed", type=int, metavar="N", help="seed (default: the config's)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: results/DATASET/qwenSIZE_MODE)")
    p.add_argument("--predictions", metavar="FILE", help="predictions (default: results/DATASET/predictions/qwenSIZE_MODE.parquet)")
    _threads(p)
    _common(p)

    p = sub.add_parser("explain", help="trajectory figures and the step-size / evidence correlation",
                       description="From LVDR's trajectories: a PCA of the states P_t (fitted on training trajectories) "
                                   "with grade centroids, ||P_t|| by grade, step sizes beside the slices that caused them, "
                                   "the Spearman correlation of step size with each slice's recorded evidence, and a "
                                   "deletion test: does removing the largest-step slices change the prediction more than "
                                   "removing random ones (explain.deletion)? And how sure is the model: MC-dropout uncertainty per test "
                                   "sequence and the accuracy left when the most uncertain are referred (explain.uncertainty). "
                                   "Writes OUT/summary.json and OUT/*.png.")
    _dataset(p)
    _prepared(p)
    p.add_argument("--runs", nargs="+", metavar="DIR",
                   help="trained LVDR runs, one per seed, each holding trajectories.npz and model.pt; figures show the "
                        "first, the checks cover all (default: every results/DATASET/lvdr/seed*/)")
    _per_run(p, "--latents", "the latent caches the runs read", "results/DATASET/latents/seedK")
    p.add_argument("--out", metavar="DIR", help="output folder (default: results/DATASET/explain)")
    _threads(p)
    _common(p)

    p = sub.add_parser("decode", help="LVDR's reasoning states and counterfactuals, decoded into images and checked",
                       description="For the test sequences of one trained LVDR run: invert each central slice to a fixed "
                                   "DDIM noise x_T, decode the PRM's latent z_t after every slice from it (what the model "
                                   "believes the scan looks like after t slices), and grade each decode by re-encoding it "
                                   "with the stage-1 encoder and the fitted DiffAE+LR: does it agree with the PRM's own grade? "
                                   "Also the pixel-wise sd of stochastic (eta > 0) decodes of z_sem, and counterfactuals: "
                                   "z_sem moved along the grade direction until the predicted grade changes by one and two, "
                                   "decoded, with their validity (re-encoded, do they move the requested way?) and proximity "
                                   "(pixel change inside and outside the disc or edema mask). Settings: explain.decoding. "
                                   "Writes OUT/summary.json, OUT/decoded.png and OUT/counterfactuals.png.")
    _dataset(p)
    _prepared(p)
    _trained(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default: results/DATASET/decoded)")
    _threads(p)
    _common(p)

    p = sub.add_parser("export", help="pack a trained model into one bundle folder for `lvdr grade`",
                       description="Write OUT/ with what grading a new scan needs and nothing executable: the resolved config "
                                   "(config.json), the stage-1 DiffAE and the first LVDR seed's PRM as safetensors weights, "
                                   "model.json (architectures, preprocessing dataset, decision threshold), the grade direction "
                                   "for counterfactuals, the fitted DiffAE+LR, and manifest.json with the sha256 of every file "
                                   "and the lvdr and torch versions. Written beside OUT and renamed into place.")
    _dataset(p)
    _trained(p)
    p.add_argument("--out", metavar="DIR", help="bundle folder (default: results/DATASET/bundle)")
    _threads(p)
    _common(p)

    p = sub.add_parser("grade", help="grade and explain a new scan with an exported model bundle",
                       description="Check the bundle against its manifest (a changed or foreign file is refused before "
                                   "anything is read; weights load as safetensors, never as pickles), prepare SCAN exactly "
                                   "as the pipeline prepares its dataset, and run the stage-1 encoder and the PRM. A SPIDER "
                                   "bundle grades one disc of a sagittal T2 .mha given its mask (--mask) and IVD label "
                                   "(--disc); a BraTS bundle grades a FLAIR volume (NIfTI or any 3D image; each slab when "
                                   "the model was trained on slabs). Writes OUT/grade.json (grade, class probabilities, "
                                   "MC-dropout uncertainty, the per-step trajectory, decoded-state grades, counterfactual) "
                                   "and OUT/explanation.html, one self-contained page.")
    p.add_argument("scan", metavar="SCAN", help="the scan to grade (.mha, .nii.gz, ...)")
    p.add_argument("--model", metavar="DIR", required=True, help="a bundle folder written by `lvdr export`")
    p.add_argument("--mask", metavar="FILE", help="SPIDER: the scan's segmentation mask (.mha), which locates the disc")
    p.add_argument("--disc", type=int, metavar="K", help="SPIDER: the disc's IVD label, as in radiological_gradings.csv "
                                                          "(the mask holds it as 200 + K)")
    p.add_argument("--channel", type=int, metavar="N", help="BraTS: the FLAIR channel of a 4D volume (MSD layout: 0)")
    p.add_argument("--passes", type=int, metavar="N", help="MC-dropout passes (default: the bundle config's explain.uncertainty.passes)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the stochastic passes and decodes (default 0)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: graded/SCAN-NAME)")
    _threads(p)
    _common(p)

    p = sub.add_parser("evaluate", help="metrics with bootstrap intervals for every predictions file",
                       description="Compute binary AUC (from probabilities) and F1, ordinal MAE and macro F1 and "
                                   "balanced accuracy on the test sequences of each predictions file, each with a "
                                   "bootstrap 95% interval that resamples patients, and each method's paired "
                                   "difference from LVDR in AUC and MAE; write them to OUT, and beside it metrics/METHOD.json "
                                   "(the paper's four metrics, intervals as separate keys) and roc/METHOD.csv for DVC.")
    _dataset(p)
    p.add_argument("--predictions", nargs="+", metavar="FILE", required=True, help="predictions files (METHOD.parquet)")
    _prepared(p)
    p.add_argument("--out", metavar="FILE", help="metrics file (default: results/DATASET/metrics.json)")
    _common(p)

    p = sub.add_parser("report", help="write the self-contained HTML report",
                       description="Write one self-contained HTML file: per dataset the sequence counts by split "
                                   "and grade, the sequence-length distribution, example slices per grade, the DiffAE "
                                   "training curve and reconstructions, the metric tables and, apart, the paper's "
                                   "numbers; the explanation checks with their verdicts; and the run's provenance.")
    p.add_argument("--prepared", default="data/prepared", metavar="DIR",
                   help="folder of prepared datasets (default: data/prepared)")
    p.add_argument("--results", default="results", metavar="DIR", help="folder of per-dataset results (default: results)")
    p.add_argument("--out", default="results/report.html", metavar="FILE", help="report file (default: results/report.html)")
    p.add_argument("--config-files", nargs="*", default=[], metavar="FILE",
                   help="the config files the run's config was resolved from, named in the provenance section")
    p.add_argument("--logs", default="logs", metavar="DIR", help="the pipeline's job logs, for the time per stage (default: logs)")
    _common(p)
    return parser


def load_config(args) -> dict:
    paths = args.config or ([Path("config/config.yaml")] if Path("config/config.yaml").is_file() else [])
    if args.command != "config":
        job = f" (SLURM job {os.environ['SLURM_JOB_ID']})" if os.environ.get("SLURM_JOB_ID") else ""  # which job wrote a log
        log.info("lvdr %s: config %s%s", args.command, ", ".join(map(str, paths)) or "built-in defaults", job)
    return configs.load(paths)


def run(args) -> None:
    cfg = load_config(args)
    if getattr(args, "threads", None):
        import torch

        from lvdr.distributed import world_size

        # a torchrun launch's processes share the job's threads
        args.threads = max(1, min(args.threads, os.cpu_count() or 1) // world_size())
        torch.set_num_threads(args.threads)
    if args.command == "config":
        sys.stdout.write(configs.dump(cfg))
        return
    if args.command == "fetch":
        from lvdr import fetch

        out = args.out or f"data/raw/{args.dataset}"
        path = fetch.run(args.dataset, cfg[args.dataset], out, cfg["data_seed"])
        log.info("fetch %s: manifest written to %s", args.dataset, path)
    elif args.command == "prepare":
        from lvdr import prepare

        manifest = args.manifest or f"data/raw/{args.dataset}/manifest.json"
        out = args.out or f"data/prepared/{args.dataset}"
        prepare.run(args.dataset, cfg[args.dataset], manifest, out, cfg["data_seed"], args.threads)
    elif args.command == "train-diffae":
        from lvdr.diffae.train import train

        from lvdr.diffae.cache import build_cache
        from lvdr.distributed import rank

        seeds = args.seed or configs.stage1_seeds(cfg, args.dataset)
        prepared = args.prepared or f"data/prepared/{args.dataset}"
        out = per_seed(args.out or str(Path(diffae_path(args.dataset, "{seed}")).parent), seeds, "--out")
        latents = per_seed(args.latents, seeds, "--latents") if args.latents else None
        for seed in seeds:
            model = train(configs.stage1_config(cfg, args.dataset), prepared, out(seed), seed, cfg["device"])
            if latents and rank() == 0:
                build_cache(model, prepared, latents(seed), cfg["cache"]["batch_size"], cfg["device"], cfg["cache"]["budget_gb"])
    elif args.command == "cache":
        from lvdr.diffae.cache import build_cache

        seeds = args.seed or configs.stage1_seeds(cfg, args.dataset)
        model = per_seed(args.model or diffae_path(args.dataset, "{seed}"), seeds, "--model")
        out = per_seed(args.out or latents_path(args.dataset, "{seed}"), seeds, "--out")
        for seed in seeds:
            build_cache(model(seed), args.prepared or f"data/prepared/{args.dataset}", out(seed), cfg["cache"]["batch_size"],
                        cfg["device"], cfg["cache"]["budget_gb"])
    elif args.command == "baseline":
        from lvdr.baselines.latent import fit_predict, save_linear
        from lvdr.data import load_latents, load_prepared
        from lvdr.predictions import write_predictions

        data = load_prepared(args.prepared or f"data/prepared/{args.dataset}")
        seeds = args.seed or configs.stage1_seeds(cfg, args.dataset)
        latents = per_seed(args.latents or latents_path(args.dataset, "{seed}"), seeds, "--latents")
        for seed in seeds:
            z = np.asarray(load_latents(latents(seed))[0])
            for method in dict.fromkeys(args.methods):
                predictions, fitted = fit_predict(method, z, data, cfg["baselines"], cfg["seed"])
                out = Path(args.out or f"results/{args.dataset}/predictions") / method / f"seed{seed}.parquet"
                write_predictions(out, predictions.assign(seed=seed))
                log.info("%s on stage-1 seed %d: predictions for %d sequences written to %s", method, seed, len(predictions), out)
                if method == "diffae_lr":
                    kept = Path(classifier_path(args.dataset, seed, args.models))
                    save_linear(fitted["model"], kept, fitted["C"], data.num_classes)
                    log.info("the fitted classifier (for grading decoded images) written to %s", kept)
    elif args.command == "train-densenet":
        from lvdr.baselines.densenet import train as train_densenet

        seed = cfg["seed"] if args.seed is None else args.seed
        train_densenet(cfg["densenet"], args.prepared or f"data/prepared/{args.dataset}",
                       args.out or f"results/{args.dataset}/densenet121/seed{seed}",
                       args.predictions or f"results/{args.dataset}/predictions/densenet121/seed{seed}.parquet", seed,
                       cfg["device"])
    elif args.command == "train-prm":
        from lvdr.prm.train import train as train_prm

        prm_cfg, method = configs.variant(cfg, args.variant, args.dataset)
        seeds = args.seed or [cfg["seed"]]
        out = per_seed(args.out or f"results/{args.dataset}/{method}/seed{{seed}}", seeds, "--out")
        predictions = per_seed(args.predictions or f"results/{args.dataset}/predictions/{method}/seed{{seed}}.parquet",
                               seeds, "--predictions")
        stage1 = [configs.stage1_seed(cfg, seed) for seed in seeds]
        latents = for_runs(args.latents, stage1, lambda k: latents_path(args.dataset, k), "--latents")
        diffae = for_runs(args.diffae, stage1, lambda k: diffae_path(args.dataset, k), "--diffae")
        for seed, cache, model in zip(seeds, latents, diffae):
            train_prm(prm_cfg, args.prepared or f"data/prepared/{args.dataset}", cache, model, out(seed), predictions(seed),
                      seed, cfg["device"])
    elif args.command == "qwen":
        from lvdr.vlm import method_name
        from lvdr.vlm.run import fine_tune, zero_shot

        method = method_name(args.size, args.mode)
        seed = cfg["seed"] if args.seed is None else args.seed
        (zero_shot if args.mode == "zeroshot" else fine_tune)(
            cfg["qwen"], args.size, args.prepared or f"data/prepared/{args.dataset}", args.out or f"results/{args.dataset}/{method}",
            args.predictions or f"results/{args.dataset}/predictions/{method}.parquet", seed, cfg["device"])
    elif args.command == "decode":
        from lvdr.explain.visualise import visualise

        d = cfg["explain"]["decoding"]
        visualise(*_trained_paths(args, cfg), args.prepared or f"data/prepared/{args.dataset}",
                  args.out or f"results/{args.dataset}/decoded", cfg["seed"], d["max_sequences"], d["samples"], d["eta"])
    elif args.command == "export":
        from lvdr.bundle import export

        run, diffae, classifier = _trained_paths(args, cfg)
        export(cfg, args.dataset, diffae, run, classifier, args.out or f"results/{args.dataset}/bundle")
    elif args.command == "grade":
        from lvdr.grade import grade

        grade(args.scan, args.model, args.out or Path("graded") / Path(args.scan).name.split(".")[0], args.mask, args.disc,
              args.channel, args.passes, args.seed)
    elif args.command == "explain":
        from lvdr.explain import explain

        runs = args.runs or sorted(Path(f"results/{args.dataset}/lvdr").glob("seed*/"))
        if not runs:
            raise DataError(f"results/{args.dataset}/lvdr: no trained LVDR runs (seed*/); run `lvdr train-prm {args.dataset}` first")
        latents = for_runs(args.latents, runs, lambda run: latents_path(args.dataset, configs.stage1_seed(cfg, run_seed(run))),
                           "--latents")
        explain(runs, args.prepared or f"data/prepared/{args.dataset}", args.out or f"results/{args.dataset}/explain", cfg["seed"],
                latents=latents, deletion=cfg["explain"]["deletion"],
                passes=cfg["explain"]["uncertainty"]["passes"])
    elif args.command == "evaluate":
        from lvdr.evaluate.run import evaluate_dataset

        evaluate_dataset(args.dataset, args.predictions, args.prepared or f"data/prepared/{args.dataset}",
                         args.out or f"results/{args.dataset}/metrics.json", cfg["evaluate"]["bootstrap"], cfg["seed"])
    elif args.command == "report":
        from lvdr import report

        report.write(cfg, Path(args.prepared), Path(args.results), Path(args.out), args.config_files, Path(args.logs))


# Packages that MONAI imports when it is first imported (monai/__init__ loads every submodule, and each
# optional dependency it finds), for parts of MONAI no stage here uses. torchvision brings torch._dynamo
# with it: about 2 s of each of the demo's 25 jobs that load MONAI (bench/pipeline.py), more with the vlm
# extra's transformers; matplotlib and scikit-image about 1 s more. The stages that do use one keep it:
# fetch (medmnist downloads RetinaMNIST with torchvision's helper), qwen, and those that load lvdr.explain
# or lvdr.report, whose modules draw figures (export too: it reuses explain's grade direction).
DRAWING = {"explain", "decode", "grade", "report", "export"}
MONAI_EXTRAS = {"torchvision": {"fetch", "qwen"}, "transformers": {"qwen"}, "skimage": {"fetch", "qwen"},
                "matplotlib": {"fetch", "qwen"} | DRAWING}


def skip_unused_imports(command: str) -> None:
    """Mark the MONAI extras this command does not use as missing (None in sys.modules: importing one raises
    ImportError, which MONAI's optional imports expect). For a process that runs one command and exits
    (``python -m lvdr``), never for a caller's own process."""
    for name, users in MONAI_EXTRAS.items():
        if command not in users and name not in sys.modules:
            sys.modules[name] = None


def main(argv: list[str] | None = None, own_process: bool = False) -> int:
    """Run one subcommand; ``own_process``: the process exists for it alone (``python -m lvdr``), so it may skip
    the imports the command does not need."""
    args = build_parser().parse_args(argv)
    if own_process:
        skip_unused_imports(args.command)
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun, rank 0 alone logs; the others say only what goes wrong
        logs.setup(None, False, logging.WARNING)
    else:
        logs.setup(args.log, args.verbose)
    started = time.perf_counter()
    try:
        run(args)
    except LvdrError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception:
        log.exception("lvdr %s failed with an unexpected error", args.command)
        return 1
    if args.command != "config":
        # the whole process's CPU time, start-up and imports included: what the job cost the machine
        log.info("lvdr %s done in %.1f s (%.1f s CPU)", args.command, time.perf_counter() - started, time.process_time())
    return 0
