rule train_prm:
    output:
        model="results/{ds}/{method}/model.pt",
        curve="results/{ds}/{method}/curve.csv",
        trajectories="results/{ds}/{method}/trajectories.npz",
        predictions="results/{ds}/predictions/{method}.parquet",
    input:
        rules.prepare.output,
        tokens=rules.cache.output.tokens,
        diffae=rules.train_diffae.output.model,
        code=code("prm/model.py", "prm/train.py", "losses.py", "training.py"),
    wildcard_constraints:
        method=r"lvdr(_\w+)?",
    params:
        section=model_section("prm"),
        variant=lambda w: f"--variant {w.method.removeprefix('lvdr_')}" if w.method != "lvdr" else "",
        config=CONFIG_ARGS,
    log:
        "logs/train_prm/{ds}_{method}.log",
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=GPU,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr train-prm {wildcards.ds} {params.config} {params.variant} "
        "--prepared data/prepared/{wildcards.ds} --latents results/{wildcards.ds}/latents --diffae {input.diffae} "
        "--out results/{wildcards.ds}/{wildcards.method} --predictions {output.predictions} --threads {threads} --log {log}"


rule explain:
    output:
        "results/{ds}/explain/summary.json",
    input:
        rules.prepare.output,
        trajectories="results/{ds}/lvdr/trajectories.npz",
        model="results/{ds}/lvdr/model.pt",
        tokens=rules.cache.output.tokens,
        code=code("explain.py"),
    params:
        section=json.dumps({"seed": config["seed"], "explain": config["explain"]}),
        config=CONFIG_ARGS,
    log:
        "logs/explain/{ds}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr explain {wildcards.ds} {params.config} --prepared data/prepared/{wildcards.ds} "
        "--trajectories {input.trajectories} --model {input.model} --latents results/{wildcards.ds}/latents "
        "--out results/{wildcards.ds}/explain --log {log}"
