"""End to end: the Snakemake pipeline on a tiny config, in a scratch project folder."""

import csv
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, TINY
from lvdr import config as configs


def snakemake(workdir, *args):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """A command as a user types it in the project folder, with this Python's tools first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


VLM = importlib.util.find_spec("transformers") is not None
GIT = ["git", "-c", "user.name=lvdr tests", "-c", "user.email=tests@lvdr.invalid"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project (Snakefile, workflow, package, dvc.yaml) with the tiny config as its
    config/config.yaml, under git and DVC, after `dvc repro` ran the pipeline stage by stage."""
    root = tmp_path_factory.mktemp("project")
    for name in ("Snakefile", "dvc.yaml", "environment.yml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    for name in ("workflow", "lvdr"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "config").mkdir()
    tiny = TINY
    if VLM:  # the Qwen baselines on a tiny random Qwen2.5-VL, on SPIDER (the vlm extra installed)
        import tiny_qwen

        tiny = {**TINY, "qwen": {"models": {"tiny": str(tiny_qwen.build(root / "tiny_qwen"))}, "datasets": ["spider"],
                                 "image_size": 56, "max_new_tokens": 4, "finetune": {"steps": 4, "batch_size": 2, "eval_every": 2}}}
    # every key written out: DVC reads the params that dvc.yaml names from this file
    (root / "config" / "config.yaml").write_text(configs.dump(configs.validate(tiny)))
    for cmd in (["git", "init", "-q"], [*GIT, "add", "-A"], [*GIT, "commit", "-qm", "tiny"], ["dvc", "init", "-q"]):
        assert run(cmd, root).returncode == 0, cmd
    done = run(["dvc", "repro"], root)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return root


def test_dvc_repro_builds_the_report(project):
    html = (project / "results" / "report.html").read_text()
    for name in ("SPIDER", "BraTS", "RetinaMNIST"):
        assert name in html
    assert html.count("data:image/png;base64,") >= 5 + 6  # data, curve and reconstruction figures, all embedded
    assert "DiffAE + LR" in html and "DenseNet121 (training loss; first seed)" in html and "paper, Table 1" in html
    # a reader learns on the first screen that the data are generated, and the paper's rows stand apart
    assert html.index("Generated demo data") < html.index('id="spider"') and "LVDR (paper)" in html
    assert "Published numbers (reference only" in html and "Provenance" in html and "The resolved config" in html
    results = project / "results"
    dvc_metrics = {ds: {p.stem: json.loads(p.read_text()) for p in (results / ds / "metrics").glob("*.json")}
                   for ds in ("spider", "brats", "retinamnist")}
    qwen = {"qwentiny_zeroshot", "qwentiny_finetuned"} if VLM else set()
    assert set(dvc_metrics["spider"]) == {"diffae_lr", "diffae_svm", "densenet121", "lvdr", "lvdr_no_traj"} | qwen
    assert set(dvc_metrics["brats"]) == {"diffae_lr", "diffae_svm", "densenet121", "lvdr"}
    assert {"auc_bin", "auc_bin_lo", "auc_bin_hi"} <= set(dvc_metrics["brats"]["diffae_lr"])
    assert "mae_ord" not in dvc_metrics["brats"]["lvdr"] and "auc_bin_sd" in dvc_metrics["spider"]["lvdr"]
    roc = {p.name for p in (results / "brats" / "roc").iterdir()}  # one curve per predictions file
    assert {"densenet121.csv", f"diffae_lr_seed{TINY['seed']}.csv", f"lvdr_seed{TINY['seed']}.csv"} <= roc
    assert "LVDR, λ_traj = 0 (ablation)" in html
    # every dataset LVDR trains on says which terms beyond the paper's objective it was trained with
    assert html.count("(eq. 4): L_step, the grading loss on every intermediate state z_t, weight 1 (prm.lambda_step); "
                      "L_move, the mean step length") >= 2
    # and that its ||P_t|| reading follows from how the anchored head grades the read-out trajectory
    assert html.count("The ||P_t|| reading below therefore follows from how this model grades") >= 2
    assert html.count("Stage 1 was trained 2 times here (diffae.seeds)") == 3  # every dataset LVDR trains on (here all)
    assert "deletion: largest steps matter more" in html and html.count('class="verdict-') >= 2 * 3 * 2
    assert html.count("Across the seeds, does ||P_t|| separate the grades") == 2  # SPIDER and BraTS
    assert html.count("paths end at their grade&#39;s centroid") == 2 and html.count("centroids in grade order") == 2
    assert html.count("do the paths end at their own grade&#39;s centroid in every seed?") == 2
    assert "Each method against LVDR, paired" in html and "MAE (ord) minus LVDR" in html
    spider = json.loads((project / "results" / "spider" / "metrics.json").read_text())["methods"]
    assert spider["lvdr"]["n_seeds"] == spider["lvdr_no_traj"]["n_seeds"] == 2 and spider["densenet121"]["n_seeds"] == 1
    # two stage-1 models (diffae.seeds), LVDR's seeds read one each and the latent baselines are fitted on both
    assert spider["diffae_lr"]["n_seeds"] == 2 and sorted((results / "spider" / "latents").iterdir()) == [
        results / "spider" / "latents" / f"seed{first}" for first in (TINY["seed"], TINY["seed"] + 1)]
    assert set(spider["densenet121"]["vs_lvdr"]) == {"auc_bin", "mae_ord"} and "vs_lvdr" not in spider["lvdr"]
    # calibration: ECE with its interval for every method, and a reliability diagram per dataset
    assert "ci_low" in spider["lvdr"]["ece_bin"] and sum(spider["diffae_lr"]["reliability"]["n"]) == 2 * spider["diffae_lr"]["n_test"]  # both seeds' rows
    assert "ECE (bin) ↓" in html and html.count("reliability diagram") >= 3
    assert "mean ± sd of 2 seeds" in html and html.count("seeds: ") >= 2 * 5
    checks = json.loads((project / "results" / "spider" / "explain" / "summary.json").read_text())["runs"]
    first = TINY.get("seed", 0)  # prm.seeds runs: seed, seed + 1
    assert [r["run"] for r in checks] == [f"seed{first}", f"seed{first + 1}"] and "tested on the test sequences of every training seed" in html
    resolved = list((project / "results" / "config").iterdir())
    for ds in ("spider", "brats", "retinamnist"):  # every job read the config Snakemake resolved
        assert f"config {resolved[0].relative_to(project)}" in (project / "logs" / "prepare" / f"{ds}.log").read_text()
    from lvdr.log import job_times

    times = job_times(project / "logs", cpu=True)  # what bench/pipeline.py sums: every job's wall and CPU seconds
    assert len(times) > 20 and all(cpu is not None and cpu > 0 for _, _, cpu in times)
    # bench/acceptance.py reads a finished run: every target gets a line with its verdict, and the two-run check runs
    # (the same run twice: the same data_seed, so it holds the two to the seeds' spread)
    done = subprocess.run([sys.executable, str(REPO / "bench" / "acceptance.py"), str(project), str(project)],
                          capture_output=True, text=True)
    lines = [line.split(None, 1)[0] for line in done.stdout.splitlines() if line.startswith("  ")]
    assert len(lines) == 12 * 2 + 4 and set(lines) <= {"met", "NOT"}, done.stdout + done.stderr
    assert done.returncode == (1 if "NOT" in lines else 0) and "Traceback" not in done.stderr
    assert "the same data, two seeds agree: brats auc_bin" in done.stdout and "differ by 0.000" in done.stdout
    assert done.stdout.count("paths end at their grade's centroid, every seed: ") == 2 * 2  # two runs, two datasets


def test_the_report_shows_decoded_states_counterfactuals_and_the_bundle(project):
    html = (project / "results" / "report.html").read_text()
    # the DDIM round trip the decoded images rest on, printed beside the reconstructions (bench/ddim_roundtrip.py
    # checks the demo SPIDER model's: 34 dB at 20 steps)
    psnr = [float(x) for x in re.findall(r"DDIM MSE [0-9.e-]+ \(PSNR ([0-9.]+) dB\)", html)]
    assert len(psnr) == 3 and min(psnr[:2]) >= 30, psnr
    assert "Decoded reasoning states" in html and "Counterfactuals along the grade direction" in html
    assert "results/spider/bundle/" in html
    for ds in ("spider", "brats"):
        decoded = json.loads((project / "results" / ds / "decoded" / "summary.json").read_text())
        assert decoded["decoding"]["n_sequences"] > 0 and set(decoded["verdicts"]) == {"decoding", "counterfactual"}
        assert 0 <= decoded["decoding"]["agreement"] <= 1 and decoded["counterfactuals"]["moves"]["1"]["n_requested"] > 0
        assert "inside" in decoded["stochastic"]["pixel_sd"]  # the disc / edema masks reached the decoder's checks


@pytest.mark.skipif(not VLM, reason='the vlm extra is not installed (pip install -e ".[vlm]")')
def test_the_report_has_the_qwen_rows_with_their_unparseable_answers(project):
    html = (project / "results" / "report.html").read_text()
    metrics = json.loads((project / "results" / "spider" / "metrics.json").read_text())["methods"]
    assert {"qwentiny_zeroshot", "qwentiny_finetuned"} <= set(metrics)
    for mode in ("zero-shot", "LoRA-tuned"):
        assert f"Qwen2.5-VL TINY, {mode}" in html
    assert "Vision-language baselines" in html and "unparseable answers" in html
    summary = json.loads((project / "results" / "spider" / "qwentiny_finetuned" / "summary.json").read_text())
    assert f"{summary['unparseable']} of {summary['answers']}" in html
    assert "Qwen 3B (fine-tuned) (paper)" in html  # the paper's rows as references


def test_grading_a_demo_case_gives_the_pipelines_probabilities(project, tmp_path, monkeypatch, capsys):
    """`lvdr grade` prepares a raw demo scan as the pipeline did, and a bundle changed after export is refused.
    (In this process, not as a subprocess: each would spend seconds importing torch and MONAI.)"""
    import pandas as pd

    from lvdr.cli import main

    monkeypatch.chdir(project)

    def grade(*args):
        rc = main(["grade", *map(str, args)])
        return rc, capsys.readouterr().err

    first = TINY.get("seed", 0)
    raw = project / "data" / "raw"
    spider = pd.read_parquet(project / "results" / "spider" / "predictions" / "lvdr" / f"seed{first}.parquet")
    case = spider[spider.split == "test"].iloc[0]
    series, disc = case.seq_id.rsplit("_ivd", 1)
    out = tmp_path / "spider"
    rc, err = grade(raw / "spider" / "demo" / "images" / f"{series}.mha", "--mask", raw / "spider" / "demo" / "masks" / f"{series}.mha",
                    "--disc", disc, "--model", "results/spider/bundle", "--out", out)
    assert rc == 0, err[-3000:]
    graded = json.loads((out / "grade.json").read_text())["sequences"]
    assert [g["sequence"] for g in graded] == [case.seq_id]
    expected = case[[f"p_{k}" for k in range(5)]].to_numpy(float)
    np.testing.assert_allclose(graded[0]["probabilities"], expected, atol=2e-4)
    assert len(graded[0]["trajectory"]["norm"]) == len(graded[0]["slices_read"]) and "uncertainty" in graded[0]
    page = (out / "explanation.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "Pfirrmann grade" in page

    brats = pd.read_parquet(project / "results" / "brats" / "predictions" / "lvdr" / f"seed{first}.parquet")
    case_id = brats.seq_id.iloc[0].rsplit("_slab", 1)[0]
    flair = next((raw / "brats").rglob(f"{case_id}_flair.nii.gz"))
    rc, err = grade(flair, "--model", "results/brats/bundle", "--out", tmp_path / "brats")
    assert rc == 0, err[-3000:]
    graded = {g["sequence"]: g["probabilities"] for g in json.loads((tmp_path / "brats" / "grade.json").read_text())["sequences"]}
    mine = brats[brats.seq_id.str.startswith(case_id + "_slab")]
    assert set(graded) == set(mine.seq_id)
    for row in mine.itertuples():
        np.testing.assert_allclose(graded[row.seq_id], [row.p_0, row.p_1], atol=2e-4)

    rc, err = grade(flair, "--model", "results/spider/bundle")
    assert rc == 2 and "grades one disc" in err and "Traceback" not in err
    rc, err = grade(flair.with_name(flair.name.replace("_flair", "_seg")), "--model", "results/brats/bundle")
    assert rc == 2 and "the name says seg" in err
    shutil.copytree(project / "results" / "brats" / "bundle", tmp_path / "tampered")
    (tmp_path / "tampered" / "config.json").write_text("{}")
    rc, err = grade(flair, "--model", tmp_path / "tampered")
    assert rc == 2 and "config.json: its sha256 does not match" in err


def test_then_snakemake_has_nothing_to_do(project):
    again = run([sys.executable, "-m", "snakemake", "--cores", "2", "results/report.html", "--dry-run"], project)
    assert "Nothing to be done" in again.stdout + again.stderr


CHECKS = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const width = document.documentElement.clientWidth;
  const out = document.createElement("pre");
  out.id = "lvdr-checks";
  out.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
    wide: [...document.body.querySelectorAll("*")]  // wider than the window, outside a scrolling box
      .filter(e => e.getBoundingClientRect().right > width + 1 && !e.closest(".scroll, pre, details:not([open])"))
      .map(e => e.tagName + (e.id ? "#" + e.id : "")).slice(0, 20),
    clientWidth: width, scrollWidth: document.documentElement.scrollWidth});
  document.body.appendChild(out);
});
</script>"""


def test_the_report_renders_in_chromium(project, tmp_path):
    """Opened in a real browser at 1280 px: every figure loads and nothing runs off the page."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text((project / "results" / "report.html").read_text().replace("</body>", CHECKS + "</body>"))
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="lvdr-checks">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    checks = json.loads(unescape(found.group(1)))
    assert checks["images"] >= 11 and checks["broken"] == []
    assert checks["wide"] == [] and checks["scrollWidth"] <= checks["clientWidth"]


def test_dvc_shows_metrics_plots_and_runs_an_experiment(project):
    metrics = run(["dvc", "metrics", "show", "--json"], project)
    assert metrics.returncode == 0, metrics.stderr
    assert "results/brats/metrics/lvdr.json" in metrics.stdout and "auc_bin_lo" in metrics.stdout
    plots = run(["dvc", "plots", "show", "--json"], project)
    assert plots.returncode == 0 and json.loads(plots.stdout).get("errors") in (None, []), plots.stdout[-2000:]
    assert "results/spider/roc/densenet121.csv" in plots.stdout and "results/spider/explain/steps.csv" in plots.stdout
    for cmd in ([*GIT, "add", "-A"], [*GIT, "commit", "-qm", "baseline"]):
        assert run(cmd, project).returncode == 0
    experiment = run(["dvc", "exp", "run", "-S", "config/config.yaml:prm.lambda_traj=0"], project)
    assert experiment.returncode == 0, (experiment.stdout + experiment.stderr)[-3000:]
    reran = experiment.stdout + experiment.stderr  # only the PRM and what reads it: stage 1 is reused
    assert "localrule train_prm" in reran and "localrule train_diffae" not in reran
    diff = run(["dvc", "params", "diff"], project)
    assert "prm.lambda_traj" in diff.stdout and "0.1" in diff.stdout
    shown = run(["dvc", "exp", "show", "--csv"], project)  # the experiment's own metrics, from DVC's cache
    rows = list(csv.DictReader(io.StringIO(shown.stdout)))
    runs = [r for r in rows if r["Experiment"] and r.get("prm.lambda_traj") in ("0", "0.0")]
    assert runs and runs[0]["results/brats/metrics/lvdr.json:auc_bin"], shown.stdout[-2000:]


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
    assert len(commands) > 20 and all(c.count("--config ") == 1 and '--config "$LVDR_CONFIG"' in c for c in commands)
    written = list((tmp_path / "results" / "config").iterdir())
    assert len(written) == 1  # the one resolved config that $LVDR_CONFIG names
    resolved = configs.load(written)
    expected = configs.merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                             yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    expected = configs.validate(configs.merge(expected, {"seed": 3, "device": "cpu"}))
    assert resolved == expected
    assert resolved["spider"]["prepare"]["image_size"] == 64 and resolved["seed"] == 3


def test_training_jobs_run_under_torchrun_when_processes_are_asked(tmp_path):
    """processes: 2 launches each training job as two data-parallel processes, with two cores (and, on GPUs,
    two GPUs) requested for it; every other job stays one process."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(configs.dump(configs.validate(TINY)))
    done = snakemake(tmp_path, "results/report.html", "--config", "processes=2", "device=cuda", "--dry-run",
                     "--printshellcmds")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    training = [line for line in lines if re.search(r"lvdr train-(diffae|densenet|prm) ", line)]
    assert training and all("torchrun --standalone --nproc_per_node 2 -m -- lvdr train-" in line and "python -m" not in line
                            for line in training)
    assert not any("torchrun" in line for line in lines if " cache " in line or "lvdr report" in line)
    jobs = re.findall(r"rule (train_\w+):.*?resources: ([^\n]*)", done.stdout, re.S)
    assert jobs and all("gpu=2" in resources for _, resources in jobs), jobs[:3]


def test_a_methods_seeds_train_in_one_job_or_a_job_each(tmp_path):
    """prm.seed_jobs: one job per LVDR method that trains all its seeds (the demo), or a job per seed (a cluster)."""
    jobs = {}
    for seed_jobs in ("one", "each"):
        (tmp_path / seed_jobs / "config").mkdir(parents=True)
        cfg = configs.validate({**TINY, "prm": {**TINY.get("prm", {}), "seeds": 3, "seed_jobs": seed_jobs}})
        (tmp_path / seed_jobs / "config" / "config.yaml").write_text(configs.dump(cfg))
        done = snakemake(tmp_path / seed_jobs, "results/report.html", "--dry-run", "--printshellcmds")
        assert done.returncode == 0, done.stderr[-3000:]
        jobs[seed_jobs] = re.findall(r"lvdr train-prm (\w+) .*?--seed ([\d ]+?) --prepared .*?--log (\S+)", done.stdout)
    seeds = [str(cfg["seed"] + i) for i in range(3)]
    assert jobs["one"] and all(s == " ".join(seeds) for _, s, _ in jobs["one"])
    assert sorted(s for _, s, _ in jobs["each"]) == sorted(seeds * len(jobs["one"]))
    assert len({log for *_, log in jobs["each"]}) == len(jobs["each"])  # a log per job


def test_jobs_claim_their_cpus_and_run_critical_path_first(tmp_path):
    """Every job claims the `cpus` it uses (capped at the machine's, when run here), and no job outranks
    a job it waits for: a job's priority, the work between it and the report, is never below that of a
    job that reads its outputs. The demo config, with RetinaMNIST (no LVDR) beside SPIDER and BraTS."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    done = snakemake(tmp_path, "results/report.html", "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = {}
    for block in done.stdout.split("\nrule ")[1:]:
        jobid = int(re.search(r"jobid: (\d+)", block).group(1))
        priority = re.search(r"priority: (\d+)", block)
        cpus = re.search(r"resources: .*\bcpus=(\d+)", block)
        jobs[jobid] = (block.split(":")[0], int(priority.group(1)) if priority else 0, cpus and int(cpus.group(1)))
    assert len(jobs) == 36 and all(1 <= cpus <= os.cpu_count() for _, _, cpus in jobs.values()), jobs
    dag = json.loads(snakemake(tmp_path, "results/report.html", "--d3dag").stdout)
    jobid_of = {node["id"]: node["value"]["jobid"] for node in dag["nodes"]}
    inverted = [(jobs[jobid_of[e["u"]]], jobs[jobid_of[e["v"]]]) for e in dag["edges"]
                if jobs[jobid_of[e["u"]]][1] < jobs[jobid_of[e["v"]]][1]]
    assert not inverted and len(dag["edges"]) > 50, inverted
    assert max(jobs.values(), key=lambda j: j[1])[0] == "fetch" and min(p for _, p, _ in jobs.values()) == 1  # the report
