# lvdr: the one definition of the pipeline graph. Every rule calls the `lvdr` command line,
# so each stage also runs on its own (`python -m lvdr <stage> --help`).
#   snakemake --cores 8 results/report.html                             the demo
#   snakemake --cores 8 results/report.html --configfile config/paper.yaml   the paper's setting
# Every job reads the one config Snakemake resolved: results/config/<hash>.yaml (workflow/rules/common.smk).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/stage1.smk"
include: "workflow/rules/densenet.smk"
include: "workflow/rules/prm.smk"
include: "workflow/rules/qwen.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/report.html",
    default_target: True
