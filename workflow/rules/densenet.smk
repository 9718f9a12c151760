rule train_densenet:
    output:
        model="results/{ds}/densenet121/seed{seed}/model.pt",
        curve="results/{ds}/densenet121/seed{seed}/curve.csv",
        predictions="results/{ds}/predictions/densenet121/seed{seed}.parquet",
    input:
        rules.prepare.output,
        code=code("baselines/densenet.py", "losses.py", "training.py", "predictions.py", "distributed.py"),
    params:
        launch=TRAIN,  # python -m lvdr, or torchrun with processes > 1
        section=model_section("densenet"),
    log:
        "logs/train_densenet/{ds}_seed{seed}.log",
    threads: TRAIN_THREADS
    priority: priority("train_densenet")
    resources:
        cpus=cpus,
        mem_mb=8000,
        runtime=720,
        gpu=TRAIN_GPUS,
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} train-densenet {wildcards.ds} --config \"$LVDR_CONFIG\" --prepared data/prepared/{wildcards.ds} "
        "--seed {wildcards.seed} --out results/{wildcards.ds}/densenet121/seed{wildcards.seed} "
        "--predictions {output.predictions} --threads {threads} --log {log}"
