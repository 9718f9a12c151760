# Stage 1 trains once per seed in STAGE1_SEEDS[ds], each model a job of its own that also writes its latent cache
# (z and patch tokens of every slice: what every later stage reads), so that a second process's start-up is not paid.
rule train_diffae:
    output:
        model="results/{ds}/diffae/seed{seed}/model.pt",
        curve="results/{ds}/diffae/seed{seed}/curve.csv",
        recon="results/{ds}/diffae/seed{seed}/reconstructions.npz",
        z="results/{ds}/latents/seed{seed}/z.npy",
        tokens="results/{ds}/latents/seed{seed}/tokens.npy",
        meta="results/{ds}/latents/seed{seed}/meta.json",
    input:
        rules.prepare.output,
        code=code("diffae/train.py", "diffae/model.py", "diffae/sampling.py", "diffae/cache.py", "training.py", "distributed.py"),
    params:
        launch=TRAIN,  # python -m lvdr, or torchrun with processes > 1
        section=lambda w: json.dumps({"seed": config["seed"], "device": config["device"],
                                      "diffae": stage1_config(config, w.ds)}, sort_keys=True),
    wildcard_constraints:
        seed=r"\d+",
    log:
        "logs/train_diffae/{ds}_seed{seed}.log",
    threads: TRAIN_THREADS
    priority: priority("train_diffae")
    resources:
        cpus=cpus,
        mem_mb=8000,
        runtime=1440,
        gpu=TRAIN_GPUS,
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} train-diffae {wildcards.ds} --config \"$LVDR_CONFIG\" --prepared data/prepared/{wildcards.ds} "
        "--seed {wildcards.seed} --out results/{wildcards.ds}/diffae/seed{wildcards.seed} "
        "--latents results/{wildcards.ds}/latents/seed{wildcards.seed} --threads {threads} --log {log}"


# The latent baselines are fitted once per stage-1 model.
rule latent_baselines:
    output:
        expand("results/{{ds}}/predictions/{method}/seed{{seed}}.parquet", method=LATENT_BASELINES),
        classifier=classifier_path("{ds}", "{seed}"),
    input:
        rules.prepare.output,
        z=rules.train_diffae.output.z,
        code=code("baselines/latent.py", "predictions.py"),
    params:
        section=model_section("baselines"),
        methods=" ".join(LATENT_BASELINES),
    wildcard_constraints:
        seed=r"\d+",
    log:
        "logs/latent_baselines/{ds}_seed{seed}.log",
    threads: 1
    priority: priority("latent_baselines")
    resources:
        cpus=cpus,
        mem_mb=4000,
        runtime=60,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr baseline {wildcards.ds} {params.methods} --config \"$LVDR_CONFIG\" --seed {wildcards.seed} "
        "--prepared data/prepared/{wildcards.ds} --out results/{wildcards.ds}/predictions --models results/{wildcards.ds} "
        "--log {log}"
