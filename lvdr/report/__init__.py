"""The self-contained HTML report: every figure embedded, one file to read or send."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from lvdr import __version__
from lvdr.errors import DataError
from lvdr.files import atomic_path, read_json
from lvdr.report import figures

log = logging.getLogger(__name__)

TITLES = {
    "spider": "SPIDER: lumbar discs, Pfirrmann grade (0-4)",
    "brats": "BraTS: FLAIR volumes, edema present (1) or absent (0)",
    "retinamnist": "RetinaMNIST: fundus images, DR severity (0-4)",
}


def counts_table(sequences: pd.DataFrame) -> str:
    """Sequences by split (rows) and grade (columns), with totals."""
    table = pd.crosstab(sequences.split, sequences.grade, margins=True, margins_name="all")
    order = [s for s in figures.SPLIT_ORDER if s in table.index] + ["all"]
    table = table.loc[order]
    table.columns = [f"grade {c}" if c != "all" else "all" for c in table.columns]
    table.index.name = None
    return table.to_html(classes="counts", border=0)


def dataset_section(name: str, folder: Path, cfg: dict) -> dict:
    meta_path = folder / "prepare.json"
    if not meta_path.exists():
        raise DataError(f"{folder}: not prepared (no prepare.json); run `lvdr prepare {name}` first")
    meta = read_json(meta_path)
    table = pd.read_parquet(folder / "slices.parquet")
    slices = np.load(folder / "slices.npy", mmap_mode="r")
    sequences = table.drop_duplicates("seq_id")
    return {
        "name": name,
        "title": TITLES.get(name, name),
        "meta": meta,
        "counts": counts_table(sequences),
        "lengths": figures.sequence_lengths(sequences, f"{name}: sequence length") if sequences.n_slices.max() > 1 else None,
        "montage": figures.montage(slices, table, cfg["report"]["montage_per_grade"], cfg["seed"],
                                   f"{name}: central slice of example sequences per grade"),
        "length_summary": sequences.n_slices.describe()[["min", "50%", "max"]].astype(int).to_dict(),
    }


def write(cfg: dict, prepared: Path, out: Path) -> Path:
    sections = [dataset_section(name, prepared / name, cfg) for name in cfg["datasets"]]
    env = jinja2.Environment(loader=jinja2.PackageLoader("lvdr.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        sections=sections, version=__version__, seed=cfg["seed"],
        created=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    with atomic_path(out) as tmp:
        tmp.write_text(html)
    log.info("report written to %s (%.0f kB)", out, out.stat().st_size / 1024)
    return out
