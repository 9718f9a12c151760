"""Where a report's numbers came from: the code, the software, the machine, the config, the data and
how long each stage took. Everything a reviewer needs to rerun it or to doubt it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from lvdr.log import job_times

# The data's own terms (README, "Licences and terms of use"), repeated beside the run's sources.
TERMS = {
    "spider": "CC BY 4.0; cite van der Graaf et al., Scientific Data 11:264 (2024)",
    "brats": "by registration with the BraTS challenge under its data use agreement, not to be redistributed "
             "(MSD Task01: CC BY-SA 4.0); cite Menze et al., IEEE TMI 34(10) (2015)",
    "retinamnist": "CC BY 4.0; cite Yang et al., MedMNIST v2, Scientific Data 10:41 (2023)",
}
NAMES = {"spider": "SPIDER", "brats": "BraTS", "retinamnist": "RetinaMNIST"}


def git_state(repo: Path) -> str:
    """The commit the code ran at, and whether the work tree differed from it."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout (commit unknown)"
    return commit + (" with uncommitted changes" if dirty else " (clean)")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("lvdr", "torch", "monai", "numpy", "scikit-learn", "snakemake"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def gpus() -> str:
    """The machine's GPUs as the NVIDIA driver names them ("none" without one). Asked of nvidia-smi, not of
    torch: the report needs nothing else of torch, whose import was a quarter of the demo report's time,
    at the end of the pipeline where nothing runs beside it."""
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30, check=True).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "none"
    names = [name.strip() for name in names if name.strip()]
    return ", ".join(names) or "none"


def device(setting: str) -> str:
    return (f"config device: {setting}; this machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
            f"GPU: {gpus()}, {platform.system()} {platform.release()}")


def data_source(name: str, meta: dict, seed: int) -> dict:
    """kind ('demo', 'real' or 'unknown') and one sentence about where a dataset came from."""
    data = meta.get("data")
    title = NAMES.get(name, name)
    if not data:
        return {"kind": "unknown", "text": f"{title}: source not recorded (prepared by an older lvdr; run prepare again)"}
    sums = "; ".join(f"{file} {value}" for file, value in data.get("checksums", {}).items())
    if data["source"] == "demo":
        return {"kind": "demo", "title": title,
                "text": f"{title}: generated demo data (lvdr's generator, data seed {seed}, in the real file formats) in "
                        f"{data['path']}, standing in for the real {title}"}
    return {"kind": "real", "text": f"{title}: the real data, from {data['path']} (source: {data['source']})"
                                     + (f"; {sums}" if sums else "")}


def stage_times(logs: Path, datasets: list[str]) -> tuple[list[str], list[list[str]], float]:
    """A table of seconds per stage (rows) and dataset (columns), from every job's log; the total."""
    per: dict[str, dict[str, float]] = {}
    for job, seconds in job_times(logs):
        stage, _, rest = job.partition("/")
        column = next((ds for ds in datasets if rest.startswith(ds)), "all")
        per.setdefault(stage, {}).setdefault(column, 0.0)
        per[stage][column] += seconds
    columns = [*datasets, "all"]
    rows = [[stage, *[f"{cells[c]:.0f}" if c in cells else "" for c in columns]] for stage, cells in per.items()]
    return ["stage", *columns], rows, sum(sum(c.values()) for c in per.values())


def collect(cfg: dict, config_text: str, config_files: list[str], logs: Path, metas: dict[str, dict]) -> dict:
    header, rows, total = stage_times(logs, list(metas))
    return {
        "git": git_state(Path(__file__).resolve().parents[2]),
        "versions": versions(),
        "device": device(cfg["device"]),
        "config_files": config_files or ["(not given)"],
        "config_text": config_text,
        "sources": [{**data_source(name, meta, cfg["data_seed"]), "terms": TERMS.get(name, "")} for name, meta in metas.items()],
        "bootstrap": cfg["evaluate"]["bootstrap"],
        "times": {"header": header, "rows": rows, "total": total},
    }
