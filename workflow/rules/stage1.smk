rule train_diffae:
    output:
        model="results/{ds}/diffae/model.pt",
        curve="results/{ds}/diffae/curve.csv",
        recon="results/{ds}/diffae/reconstructions.npz",
    input:
        rules.prepare.output,
        code=code("diffae/train.py", "diffae/model.py", "diffae/sampling.py", "training.py", "distributed.py"),
    params:
        launch=TRAIN,  # python -m lvdr, or torchrun with processes > 1
        section=model_section("diffae"),
    log:
        "logs/train_diffae/{ds}.log",
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
        "--out results/{wildcards.ds}/diffae --threads {threads} --log {log}"


rule cache:
    output:
        z="results/{ds}/latents/z.npy",
        tokens="results/{ds}/latents/tokens.npy",
        meta="results/{ds}/latents/meta.json",
    input:
        rules.prepare.output,
        model=rules.train_diffae.output.model,
        code=code("diffae/cache.py"),
    params:
        section=json.dumps(config["cache"]),
    log:
        "logs/cache/{ds}.log",
    threads: 1  # a second thread hardly shortens the demo's cache (mostly start-up), and holds a CPU
    priority: priority("cache")
    resources:
        cpus=cpus,
        mem_mb=8000,
        runtime=120,
        gpu=GPU,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr cache {wildcards.ds} --config \"$LVDR_CONFIG\" --model {input.model} "
        "--prepared data/prepared/{wildcards.ds} --out results/{wildcards.ds}/latents --threads {threads} --log {log}"


rule latent_baselines:
    output:
        expand("results/{{ds}}/predictions/{method}.parquet", method=LATENT_BASELINES),
        classifier="results/{ds}/diffae_lr/classifier.json",
    input:
        rules.prepare.output,
        z=rules.cache.output.z,
        code=code("baselines/latent.py", "predictions.py"),
    params:
        section=model_section("baselines"),
        methods=" ".join(LATENT_BASELINES),
    log:
        "logs/latent_baselines/{ds}.log",
    threads: 1
    priority: priority("latent_baselines")
    resources:
        cpus=cpus,
        mem_mb=4000,
        runtime=60,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr baseline {wildcards.ds} {params.methods} --config \"$LVDR_CONFIG\" "
        "--latents results/{wildcards.ds}/latents --prepared data/prepared/{wildcards.ds} "
        "--out results/{wildcards.ds}/predictions --models results/{wildcards.ds} --log {log}"
