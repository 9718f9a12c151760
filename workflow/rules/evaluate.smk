rule evaluate:
    output:
        "results/{ds}/metrics.json",
    input:
        predictions=lambda w: prediction_files(w.ds),
        meta="data/prepared/{ds}/prepare.json",
        code=code("evaluate/metrics.py", "evaluate/run.py"),
    params:
        section=json.dumps({"seed": config["seed"], "evaluate": config["evaluate"]}),
    log:
        "logs/evaluate/{ds}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr evaluate {wildcards.ds} --config \"$LVDR_CONFIG\" --predictions {input.predictions} "
        "--prepared data/prepared/{wildcards.ds} --out {output} --log {log}"


rule summarize:
    output:
        "results/metrics.json",
    input:
        expand("results/{ds}/metrics.json", ds=DATASETS),
    log:
        "logs/summarize.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr summarize --metrics {input} --out {output} --log {log}"
