rule evaluate:
    output:
        # beside it, evaluate rewrites metrics/<method>.json and roc/<file>.csv for DVC (not declared
        # here: Snakemake would put a timestamp file into a directory output, and DVC would read it)
        metrics="results/{ds}/metrics.json",
    input:
        predictions=lambda w: prediction_files(w.ds),
        meta="data/prepared/{ds}/prepare.json",
        code=code("evaluate/metrics.py", "evaluate/run.py", "evaluate/calibration.py"),
    params:
        section=json.dumps({"seed": config["seed"], "evaluate": config["evaluate"]}),
    log:
        "logs/evaluate/{ds}.log",
    threads: 1
    priority: priority("evaluate")
    resources:
        cpus=cpus,
        mem_mb=2000,
        runtime=30,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr evaluate {wildcards.ds} --config \"$LVDR_CONFIG\" --predictions {input.predictions} "
        "--prepared data/prepared/{wildcards.ds} --out {output.metrics} --log {log}"
