import json
import os

from lvdr.cli import classifier_path, diffae_path, latents_path
from lvdr.config import stage1_config, stage1_seed, stage1_seeds, write_resolved
from lvdr.vlm import method_name

DATASETS = config["datasets"]
# Every job reads the one config Snakemake resolved (the Snakefile's configfile, each --configfile,
# then --config overrides), written once to a content-addressed file, results/config/<hash>.yaml.
# Shell commands read its path from $LVDR_CONFIG rather than from params, so that a change to one
# dataset's settings re-runs only the jobs whose own section (their params) changed.
os.environ["LVDR_CONFIG"] = str(write_resolved(config, "results/config"))


envvars:
    "LVDR_CONFIG",  # passed on to jobs that run elsewhere (a cluster)


wildcard_constraints:
    ds="|".join(DATASETS),


def section(ds):
    """A dataset's config (plus the data's seed) as text: a change to it re-runs that dataset's jobs.
    The training `seed` is not in it: a new one retrains on the same data (the models' sections hold it)."""
    return json.dumps({"data_seed": config["data_seed"], ds: config[ds]}, sort_keys=True)


def code(*paths):
    """The package modules a rule runs, so that editing them re-runs the rule."""
    return [workflow.source_path(f"../../lvdr/{p}") for p in paths]

# Every method that writes results/{ds}/predictions/{method}.parquet; the evaluator reads them all.
LATENT_BASELINES = ["diffae_lr", "diffae_svm"]  # fitted by one job per dataset
BASELINES = LATENT_BASELINES + ["densenet121"]


PRM_DATASETS = [ds for ds in DATASETS if ds in config["prm"]["datasets"]]


def lvdr_methods(ds):
    """LVDR itself and, on the datasets chosen for them, its ablations (prm.ablations); none off prm.datasets."""
    if ds not in PRM_DATASETS:
        return []
    ablations = config["prm"]["ablations"] if ds in config["prm"]["ablation_datasets"] else {}
    return ["lvdr"] + [f"lvdr_{name}" for name in ablations]


# LVDR and its ablations train once per seed: seed, seed + 1, ... (prm.seeds runs).
PRM_SEEDS = [config["seed"] + i for i in range(config["prm"]["seeds"])]


# Stage 1 trains once per seed too (diffae.seeds models where LVDR trains, one elsewhere); LVDR's seed s reads
# the latents of stage-1 seed STAGE1_OF[s].
STAGE1_SEEDS = {ds: stage1_seeds(config, ds) for ds in DATASETS}
STAGE1_OF = {s: stage1_seed(config, s) for s in PRM_SEEDS}


def stage1_files(ds, seeds, path):
    """The stage-1 files that the LVDR runs of ``seeds`` read, in order: ``path`` is lvdr.cli's latents_path
    (their latent caches) or diffae_path (their DiffAE models)."""
    return [path(ds, STAGE1_OF[s]) for s in seeds]


# prm.seed_jobs: one job trains a method's seeds one after the other (each job's start-up, about 6 s of
# imports, is paid once, and a seed trains to the same weights as in a job of its own), or each seed is a
# job of its own (`each`: on a cluster, side by side). JOB_SEEDS are the seeds of one job: all of them, or
# the {seed} wildcard.
ONE_PRM_JOB = config["prm"]["seed_jobs"] == "one"
JOB_SEEDS = PRM_SEEDS if ONE_PRM_JOB else ["{seed}"]


def job_stage1(path):
    """The stage-1 latent caches or models (``path``, as in stage1_files) that a train_prm job's seeds read, in order."""
    return lambda w: stage1_files(w.ds, PRM_SEEDS if ONE_PRM_JOB else [int(w.seed)], path)


FIRST_STAGE1 = STAGE1_OF[PRM_SEEDS[0]]  # the stage 1 of the first LVDR run: the one decode and export show


# DenseNet121 trains once per seed too (densenet.seeds runs; the demo keeps one).
DENSENET_SEEDS = [config["seed"] + i for i in range(config["densenet"]["seeds"])]


# The Qwen2.5-VL baselines (qwen.models: size -> model; off while empty): qwen<size>_<mode>.
def qwen_methods(ds):
    if ds not in config["qwen"]["datasets"]:
        return []
    return [method_name(size, mode) for size in config["qwen"]["models"] for mode in config["qwen"]["modes"]]


def prediction_files(ds):
    """Every predictions file the evaluator reads: one per Qwen baseline, one per stage-1 seed of each latent
    baseline, one per seed of DenseNet121 and of each LVDR method."""
    return ([f"results/{ds}/predictions/{m}.parquet" for m in qwen_methods(ds)]
            + [f"results/{ds}/predictions/{m}/seed{s}.parquet" for m in LATENT_BASELINES for s in STAGE1_SEEDS[ds]]
            + [f"results/{ds}/predictions/densenet121/seed{s}.parquet" for s in DENSENET_SEEDS]
            + [f"results/{ds}/predictions/{m}/seed{s}.parquet" for m in lvdr_methods(ds) for s in PRM_SEEDS])


# At most one job per CPU when running here: `--cores 8` (the README's command) on a 2-CPU laptop
# would run up to 8 single-threaded jobs side by side, and they slow one another down (measured: four
# PRM trainings on 2 CPUs cost 44 s of CPU each, two at a time 38 s). Every rule claims `cpus`, its
# threads; `--resources cpus=N` sets another cap. On a cluster every job has its own cores: no cap.
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
if workflow.local_exec and "cpus" not in workflow.global_resources:
    workflow.register_resource("cpus", CPUS)


def cpus(wildcards, threads):
    return min(threads, CPUS)


def prepare_threads(wildcards):
    """Worker processes for prepare: real SPIDER and BraTS volumes take long enough to share out; the
    demo's take seconds (lvdr.prepare.parallel_map would not start workers) and RetinaMNIST is one file."""
    return 2 if wildcards.ds != "retinamnist" and config[wildcards.ds]["source"] != "demo" else 1


# Priorities: of the jobs ready to run, the one with the most work still between it and the report
# goes first (critical-path list scheduling), so that no long job is left to run alone at the end.
# Each is the demo's CPU seconds on the longest path from the start of the job to results/report.html
# (bench/pipeline.py), on a dataset LVDR trains on and on one it does not (whose path ends at the tables).
PRIORITY = {  # rule: (on prm.datasets, on the others)
    "fetch": (225, 59), "prepare": (209, 55), "train_diffae": (192, 50),
    "train_prm": (139, 0), "train_prm_ablation": (110, 0), "train_densenet": (46, 44), "qwen": (46, 44),
    "latent_baselines": (35, 11), "decode": (33, 0), "explain": (25, 0), "export": (12, 0), "evaluate": (9, 9),
}


def priority(rule):
    def of(wildcards):
        key = "train_prm_ablation" if wildcards.get("method", "lvdr") != "lvdr" else rule
        return PRIORITY[key][wildcards.ds not in PRM_DATASETS]

    return of


GPU = 0 if config["device"] == "cpu" else 1
# One thread per training process: at demo size a second thread speeds a job up by about a quarter
# (DenseNet: 50 s with 1 thread, 38 s with 2), so two jobs side by side finish sooner than two
# in turn. On a GPU the threads hardly matter; raise them with --set-threads where they do.
# With `processes: N` a training job is N data-parallel processes under torchrun: N threads, N GPUs.
PROCESSES = config["processes"]
TRAIN_THREADS = PROCESSES
TRAIN_GPUS = GPU * PROCESSES
# "--": torchrun would take the job's own options (--log) for abbreviations of its own
TRAIN = "python -m lvdr" if PROCESSES == 1 else f"torchrun --standalone --nproc_per_node {PROCESSES} -m -- lvdr"


def model_section(key):
    """A model's config (plus seed and device) as text: a change to it re-runs that model's jobs."""
    return json.dumps({"seed": config["seed"], "device": config["device"], key: config[key]}, sort_keys=True)
