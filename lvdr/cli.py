"""The ``lvdr`` command line: one subcommand per pipeline stage.

Snakemake calls these same commands, so every stage also runs, and is tested, on its own.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import yaml

from lvdr import DATASETS, __version__
from lvdr import config as configs
from lvdr import log as logs
from lvdr.errors import LvdrError

log = logging.getLogger("lvdr")

DESCRIPTION = """\
Latent Visual Diffusion Reasoning: explainable pathology grading from multi-slice scans.

The usual way to run everything is the Snakemake pipeline
    snakemake --cores 8 results/report.html
which calls these subcommands in order; each can also be run by hand:
    lvdr fetch spider      raw data (demo generator, download or local folder) -> data/raw/spider/
    lvdr prepare spider    slices and the slice table -> data/prepared/spider/
    lvdr report            all prepared datasets -> results/report.html
Configs are YAML files validated against workflow/schemas/config.schema.yaml;
`lvdr config` prints the resolved config with every default filled in.
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", action="append", metavar="FILE",
                        help="config YAML; repeat to layer files, later ones win (default: config/config.yaml "
                             "if it exists, else the built-in defaults)")
    parser.add_argument("--log", metavar="FILE", help="also write the log to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug-level logging")


def _dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=DATASETS, help="which dataset")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvdr", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lvdr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="validate configs and print the resolved config",
                       description="Validate the config files against the schema and print the merged config "
                                   "with every default filled in. A mistyped key fails here, naming the key.")
    _common(p)

    p = sub.add_parser("fetch", help="get raw data: demo generator, download, or a local folder",
                       description="Make raw data available and write OUT/manifest.json pointing at it. "
                                   "The dataset's `source` key chooses: demo (generated, real file formats), "
                                   "zenodo (SPIDER: resumable, checksummed download), folder (BraTS, or a SPIDER "
                                   "copy you already have) or medmnist (RetinaMNIST .npz). Raw files are only read.")
    _dataset(p)
    p.add_argument("--out", metavar="DIR", help="raw-data folder (default: data/raw/DATASET)")
    _common(p)

    p = sub.add_parser("prepare", help="slices + slice table from raw data",
                       description="Turn raw data into OUT/slices.npy (N x C x H x W, float16 in [0, 1]), "
                                   "OUT/slices.parquet (one row per slice: sequence, position, split, grade, "
                                   "provenance) and OUT/prepare.json (counts and skipped items with reasons).")
    _dataset(p)
    p.add_argument("--manifest", metavar="FILE", help="fetch's manifest (default: data/raw/DATASET/manifest.json)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: data/prepared/DATASET)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="worker processes (default 1)")
    _common(p)

    p = sub.add_parser("report", help="write the self-contained HTML report",
                       description="Write one self-contained HTML file: per dataset the sequence counts by split "
                                   "and grade, the sequence-length distribution and example slices per grade.")
    p.add_argument("--prepared", default="data/prepared", metavar="DIR",
                   help="folder of prepared datasets (default: data/prepared)")
    p.add_argument("--out", default="results/report.html", metavar="FILE", help="report file (default: results/report.html)")
    _common(p)
    return parser


def load_config(args) -> dict:
    paths = args.config or ([Path("config/config.yaml")] if Path("config/config.yaml").is_file() else [])
    return configs.load(paths)


def run(args) -> None:
    cfg = load_config(args)
    if args.command == "config":
        sys.stdout.write(yaml.safe_dump(cfg, sort_keys=False))
        return
    if args.command == "fetch":
        from lvdr import fetch

        out = args.out or f"data/raw/{args.dataset}"
        path = fetch.run(args.dataset, cfg[args.dataset], out, cfg["seed"])
        log.info("fetch %s: manifest written to %s", args.dataset, path)
    elif args.command == "prepare":
        from lvdr import prepare

        manifest = args.manifest or f"data/raw/{args.dataset}/manifest.json"
        out = args.out or f"data/prepared/{args.dataset}"
        prepare.run(args.dataset, cfg[args.dataset], manifest, out, cfg["seed"], args.threads)
    elif args.command == "report":
        from lvdr import report

        report.write(cfg, Path(args.prepared), Path(args.out))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log, args.verbose)
    started = time.perf_counter()
    try:
        run(args)
    except LvdrError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception:
        log.exception("lvdr %s failed with an unexpected error", args.command)
        return 1
    if args.command != "config":
        log.info("lvdr %s done in %.1f s", args.command, time.perf_counter() - started)
    return 0
