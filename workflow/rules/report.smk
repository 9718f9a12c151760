rule report:
    output:
        "results/report.html",
    input:
        prepared=expand("data/prepared/{ds}/{f}", ds=DATASETS, f=["slices.npy", "slices.parquet", "prepare.json"]),
        stage1=expand("results/{ds}/diffae/seed{seed}/{f}", ds=DATASETS, seed=config["seed"], f=["curve.csv", "reconstructions.npz"]),
        densenet=expand("results/{ds}/densenet121/seed{seed}/curve.csv", ds=DATASETS, seed=DENSENET_SEEDS[0]),
        prm=expand("results/{ds}/lvdr/seed{seed}/curve.csv", ds=PRM_DATASETS, seed=PRM_SEEDS[0]),
        explain=expand("results/{ds}/explain/summary.json", ds=PRM_DATASETS),
        decoded=expand("results/{ds}/decoded/summary.json", ds=PRM_DATASETS),
        bundles=expand("results/{ds}/bundle/manifest.json", ds=PRM_DATASETS),
        metrics=expand("results/{ds}/metrics.json", ds=DATASETS),
        code=code("report/__init__.py", "report/figures.py", "report/templates/report.html.j2"),
    params:
        report=json.dumps({"datasets": DATASETS, "prm_datasets": PRM_DATASETS, "report": config["report"], "seed": config["seed"], "data_seed": config["data_seed"]}),
        config_files=" ".join(f"'{os.path.relpath(f)}'" for f in workflow.configfiles),
    log:
        "logs/report.log",
    threads: 1
    priority: 1
    resources:
        cpus=cpus,
        mem_mb=4000,
        runtime=30,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr report --config \"$LVDR_CONFIG\" --prepared data/prepared --results results --out {output} "
        "--config-files {params.config_files} --logs logs --log {log}"
