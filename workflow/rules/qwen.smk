rule qwen:
    output:
        predictions="results/{ds}/predictions/qwen{size}_{mode}.parquet",
        summary="results/{ds}/qwen{size}_{mode}/summary.json",
        answers="results/{ds}/qwen{size}_{mode}/answers.csv",
    input:
        rules.prepare.output,
        code=code("vlm/model.py", "vlm/prompts.py", "vlm/run.py"),
    wildcard_constraints:
        size="[0-9a-z]+",
        mode="zeroshot|finetuned",
    params:
        section=json.dumps({"seed": config["seed"], "device": config["device"], "qwen": config["qwen"]}, sort_keys=True),
    log:
        "logs/qwen/{ds}_{size}_{mode}.log",
    threads: 2
    priority: priority("qwen")
    resources:
        cpus=cpus,
        mem_mb=32000,
        runtime=1440,
        gpu=GPU,
    conda:
        "../../environment.yml"
    shell:
        "python -m lvdr qwen {wildcards.ds} --size {wildcards.size} --mode {wildcards.mode} --config \"$LVDR_CONFIG\" "
        "--prepared data/prepared/{wildcards.ds} --out results/{wildcards.ds}/qwen{wildcards.size}_{wildcards.mode} "
        "--predictions {output.predictions} --threads {threads} --log {log}"
