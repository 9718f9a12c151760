"""End to end: the Snakemake pipeline on a tiny config, in a scratch project folder."""

import json
import subprocess
import sys

import yaml

from conftest import REPO, TINY


def snakemake(workdir, *args):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_pipeline_builds_report_and_then_has_nothing_to_do(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(TINY))
    done = snakemake(tmp_path, "results/report.html")
    assert done.returncode == 0, done.stderr[-3000:]
    html = (tmp_path / "results" / "report.html").read_text()
    for name in ("SPIDER", "BraTS", "RetinaMNIST"):
        assert name in html
    assert html.count("data:image/png;base64,") >= 5 + 6  # data, curve and reconstruction figures, all embedded
    assert "DiffAE + LR" in html and "DenseNet121 (training loss)" in html and "paper, Table 1" in html
    summary = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert set(summary) == {"spider", "brats", "retinamnist"}
    assert set(summary["spider"]) == {"diffae_lr", "diffae_svm", "densenet121", "lvdr", "lvdr_no_traj"}
    assert set(summary["brats"]) == {"diffae_lr", "diffae_svm", "densenet121", "lvdr"}
    assert "LVDR, λ_traj = 0 (ablation)" in html and "auc_bin" in summary["brats"]["diffae_lr"]
    assert "Do the large steps mark what the model used?" in html  # the deletion test ran and is reported
    assert "Each method against LVDR, paired" in html and "MAE (ord) minus LVDR" in html
    spider = json.loads((tmp_path / "results" / "spider" / "metrics.json").read_text())["methods"]
    assert spider["lvdr"]["n_seeds"] == spider["lvdr_no_traj"]["n_seeds"] == 2 and spider["densenet121"]["n_seeds"] == 1
    assert set(spider["densenet121"]["vs_lvdr"]) == {"auc_bin", "mae_ord"} and "vs_lvdr" not in spider["lvdr"]
    assert "mean ± sd of 2 seeds" in html and html.count("seeds: ") >= 2 * 5
    checks = json.loads((tmp_path / "results" / "spider" / "explain" / "summary.json").read_text())["runs"]
    first = TINY.get("seed", 0)  # prm.seeds runs: seed, seed + 1
    assert [r["run"] for r in checks] == [f"seed{first}", f"seed{first + 1}"] and "checked for every training seed" in html
    resolved = list((tmp_path / "results" / "config").iterdir())
    for ds in ("spider", "brats", "retinamnist"):  # every job read the config Snakemake resolved
        assert f"config {resolved[0].relative_to(tmp_path)}" in (tmp_path / "logs" / "prepare" / f"{ds}.log").read_text()
    again = snakemake(tmp_path, "results/report.html", "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_config_typo_stops_the_pipeline_naming_the_key(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({"spider": {"prepare": {"crop_pix": 3}}}))
    done = snakemake(tmp_path, "results/report.html", "--dry-run")
    assert done.returncode != 0
    assert "crop_pix" in done.stdout + done.stderr


def test_lint_is_clean():
    done = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "-s", str(REPO / "Snakefile")],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and "good condition" in done.stdout + done.stderr, done.stdout + done.stderr


def test_every_job_reads_the_config_snakemake_resolved(tmp_path):
    """The README's paper command, argument order included, plus --config overrides: every job reads
    one resolved config file, equal to the demo config, then paper.yaml, then the overrides."""
    import shlex

    from lvdr import config as configs

    command = next(line for line in (REPO / "README.md").read_text().splitlines()
                   if line.startswith("snakemake ") and "--configfile config/paper.yaml" in line)
    (tmp_path / "config").mkdir()
    for name in ("config.yaml", "paper.yaml"):
        (tmp_path / "config" / name).write_text((REPO / "config" / name).read_text())
    overrides = ["seed=3", "device=cpu"]
    done = snakemake(tmp_path, *shlex.split(command)[1:], "--config", *overrides, "--dry-run", "--printshellcmds")
    assert done.returncode == 0, done.stderr[-3000:]
    commands = [line for line in done.stdout.splitlines() if "python -m lvdr " in line]
    configured = [c for c in commands if "lvdr summarize " not in c]  # summarize only merges metrics files
    assert len(configured) > 20 and all(c.count("--config ") == 1 and '--config "$LVDR_CONFIG"' in c for c in configured)
    written = list((tmp_path / "results" / "config").iterdir())
    assert len(written) == 1  # the one resolved config that $LVDR_CONFIG names
    resolved = configs.load(written)
    expected = configs.merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                             yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    expected = configs.validate(configs.merge(expected, {"seed": 3, "device": "cpu"}))
    assert resolved == expected
    assert resolved["spider"]["prepare"]["image_size"] == 64 and resolved["seed"] == 3
