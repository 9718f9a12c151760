import json
import shlex

DATASETS = config["datasets"]
# The CLI reads the same config files Snakemake merged (later files win).
CONFIG_ARGS = " ".join(f"--config {shlex.quote(str(p))}" for p in workflow.configfiles)


wildcard_constraints:
    ds="|".join(DATASETS),


def section(ds):
    """A dataset's config (plus the seed) as text: a change to it re-runs that dataset's jobs."""
    return json.dumps({"seed": config["seed"], ds: config[ds]}, sort_keys=True)


def code(*paths):
    """The package modules a rule runs, so that editing them re-runs the rule."""
    return [workflow.source_path(f"../../lvdr/{p}") for p in paths]

# Every method that writes results/{ds}/predictions/{method}.parquet; the evaluator reads them all.
LATENT_BASELINES = ["diffae_lr", "diffae_svm"]  # fitted by one job per dataset
BASELINES = LATENT_BASELINES + ["densenet121"]


def lvdr_methods(ds):
    """LVDR itself and, on the datasets chosen for them, its ablations (prm.ablations)."""
    ablations = config["prm"]["ablations"] if ds in config["prm"]["ablation_datasets"] else {}
    return ["lvdr"] + [f"lvdr_{name}" for name in ablations]


def methods(ds):
    return BASELINES + lvdr_methods(ds)
GPU = 0 if config["device"] == "cpu" else 1
# Model training takes every core Snakemake was given, so training jobs run one at a time
# instead of fighting over the same cores (torch uses that many threads).
TRAIN_THREADS = max(1, workflow.cores)


def model_section(key):
    """A model's config (plus seed and device) as text: a change to it re-runs that model's jobs."""
    return json.dumps({"seed": config["seed"], "device": config["device"], key: config[key]}, sort_keys=True)
