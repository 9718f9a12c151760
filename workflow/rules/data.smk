rule fetch:
    output:
        "data/raw/{ds}/manifest.json",
    input:
        code=lambda w: code(f"fetch/{w.ds}.py", f"demo/{w.ds}.py"),
    params:
        section=lambda w: section(w.ds),
    log:
        "logs/fetch/{ds}.log",
    threads: 1
    priority: priority("fetch")
    resources:
        cpus=cpus,
        mem_mb=4000,
        runtime=120,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr fetch {wildcards.ds} --config \"$LVDR_CONFIG\" --out data/raw/{wildcards.ds} --log {log}"


rule prepare:
    output:
        slices="data/prepared/{ds}/slices.npy",
        table="data/prepared/{ds}/slices.parquet",
        meta="data/prepared/{ds}/prepare.json",
    input:
        manifest="data/raw/{ds}/manifest.json",
        code=lambda w: code(f"prepare/{w.ds}.py", "prepare/__init__.py", "prepare/geometry.py"),
    params:
        section=lambda w: section(w.ds),
    log:
        "logs/prepare/{ds}.log",
    threads: prepare_threads
    priority: priority("prepare")
    resources:
        cpus=cpus,
        mem_mb=8000,
        runtime=120,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr prepare {wildcards.ds} --config \"$LVDR_CONFIG\" --manifest {input.manifest} "
        "--out data/prepared/{wildcards.ds} --threads {threads} --log {log}"
