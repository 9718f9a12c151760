rule train_densenet:
    output:
        model="results/{ds}/densenet121/model.pt",
        curve="results/{ds}/densenet121/curve.csv",
        predictions="results/{ds}/predictions/densenet121.parquet",
    input:
        rules.prepare.output,
        code=code("baselines/densenet.py", "losses.py", "training.py", "predictions.py"),
    params:
        section=model_section("densenet"),
    log:
        "logs/train_densenet/{ds}.log",
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=GPU,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr train-densenet {wildcards.ds} --config \"$LVDR_CONFIG\" --prepared data/prepared/{wildcards.ds} "
        "--out results/{wildcards.ds}/densenet121 --predictions {output.predictions} --threads {threads} --log {log}"
