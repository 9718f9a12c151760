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
