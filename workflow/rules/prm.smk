rule train_prm:
    output:
        model=expand("results/{{ds}}/{{method}}/seed{seed}/model.pt", seed=JOB_SEEDS),
        curve=expand("results/{{ds}}/{{method}}/seed{seed}/curve.csv", seed=JOB_SEEDS),
        trajectories=expand("results/{{ds}}/{{method}}/seed{seed}/trajectories.npz", seed=JOB_SEEDS),
        predictions=expand("results/{{ds}}/predictions/{{method}}/seed{seed}.parquet", seed=JOB_SEEDS),
    input:
        rules.prepare.output,
        tokens=lambda w: [f"{d}/tokens.npy" for d in job_stage1(latents_path)(w)],
        diffae=job_stage1(diffae_path),
        code=code("prm/model.py", "prm/train.py", "losses.py", "training.py", "distributed.py"),
    wildcard_constraints:
        method=r"lvdr(_\w+)?",
        seed=r"\d+",
    params:
        launch=TRAIN,  # python -m lvdr, or torchrun with processes > 1
        section=model_section("prm"),
        variant=lambda w: f"--variant {w.method.removeprefix('lvdr_')}" if w.method != "lvdr" else "",
        seeds=lambda w: " ".join(map(str, PRM_SEEDS)) if ONE_PRM_JOB else w.seed,
        latents=lambda w: " ".join(job_stage1(latents_path)(w)),
    log:
        "logs/train_prm/{ds}_{method}.log" if ONE_PRM_JOB else "logs/train_prm/{ds}_{method}_seed{seed}.log",
    threads: TRAIN_THREADS
    priority: priority("train_prm")
    resources:
        cpus=cpus,
        mem_mb=8000,
        runtime=720 * len(JOB_SEEDS),
        gpu=TRAIN_GPUS,
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} train-prm {wildcards.ds} --config \"$LVDR_CONFIG\" {params.variant} --seed {params.seeds} "
        "--prepared data/prepared/{wildcards.ds} --latents {params.latents} --diffae {input.diffae} "
        "--out 'results/{wildcards.ds}/{wildcards.method}/seed{{seed}}' "
        "--predictions 'results/{wildcards.ds}/predictions/{wildcards.method}/seed{{seed}}.parquet' "
        "--threads {threads} --log {log}"


rule explain:
    output:
        summary="results/{ds}/explain/summary.json",
        plots=multiext("results/{ds}/explain/", "steps.csv", "deletion.csv"),  # for `dvc plots show`
    input:
        rules.prepare.output,
        runs=lambda w: expand("results/{ds}/lvdr/seed{seed}/{f}", ds=w.ds, seed=PRM_SEEDS, f=["trajectories.npz", "model.pt"]),
        tokens=lambda w: [f"{d}/tokens.npy" for d in stage1_files(w.ds, PRM_SEEDS, latents_path)],
        code=code(*(f"explain/{m}.py" for m in ("__init__", "trajectories", "deletion", "uncertainty", "verdicts", "plots"))),
    params:
        section=json.dumps({"seed": config["seed"], "explain": config["explain"]}),
        runs=lambda w: " ".join(f"results/{w.ds}/lvdr/seed{seed}" for seed in PRM_SEEDS),
        latents=lambda w: " ".join(stage1_files(w.ds, PRM_SEEDS, latents_path)),
    log:
        "logs/explain/{ds}.log",
    threads: 1
    priority: priority("explain")
    resources:
        cpus=cpus,
        mem_mb=4000,
        runtime=30,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr explain {wildcards.ds} --config \"$LVDR_CONFIG\" --prepared data/prepared/{wildcards.ds} "
        "--runs {params.runs} --latents {params.latents} "
        "--out results/{wildcards.ds}/explain --threads {threads} --log {log}"


rule decode:
    output:
        summary="results/{ds}/decoded/summary.json",
    input:
        rules.prepare.output,
        run=expand("results/{{ds}}/lvdr/seed{seed}/{f}", seed=PRM_SEEDS[0], f=["trajectories.npz", "model.pt"]),
        diffae=diffae_path("{ds}", FIRST_STAGE1),
        classifier=classifier_path("{ds}", FIRST_STAGE1),
        code=code(*(f"explain/{m}.py" for m in ("visualise", "decoding", "counterfactuals", "trajectories", "verdicts", "plots")),
                  "diffae/sampling.py"),
    params:
        section=json.dumps({"seed": config["seed"], "decoding": config["explain"]["decoding"]}),
        run=lambda w: f"results/{w.ds}/lvdr/seed{PRM_SEEDS[0]}",
    log:
        "logs/decode/{ds}.log",
    threads: 1
    priority: priority("decode")
    resources:
        cpus=cpus,
        mem_mb=4000,
        runtime=30,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr decode {wildcards.ds} --config \"$LVDR_CONFIG\" --prepared data/prepared/{wildcards.ds} "
        "--run {params.run} --diffae {input.diffae} --classifier {input.classifier} "
        "--out results/{wildcards.ds}/decoded --threads {threads} --log {log}"


rule export:
    output:
        manifest="results/{ds}/bundle/manifest.json",
    input:
        run=expand("results/{{ds}}/lvdr/seed{seed}/{f}", seed=PRM_SEEDS[0], f=["trajectories.npz", "model.pt"]),
        diffae=diffae_path("{ds}", FIRST_STAGE1),
        classifier=classifier_path("{ds}", FIRST_STAGE1),
        code=code("bundle.py", "explain/counterfactuals.py"),
    params:
        section=lambda w: section(w.ds),
        run=lambda w: f"results/{w.ds}/lvdr/seed{PRM_SEEDS[0]}",
    log:
        "logs/export/{ds}.log",
    threads: 1
    priority: priority("export")
    resources:
        cpus=cpus,
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr export {wildcards.ds} --config \"$LVDR_CONFIG\" --run {params.run} --diffae {input.diffae} "
        "--classifier {input.classifier} --out results/{wildcards.ds}/bundle --threads {threads} --log {log}"
