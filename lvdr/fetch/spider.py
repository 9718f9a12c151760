"""SPIDER: the demo generator, a local copy, or Zenodo record 10159290 (resumable, checksummed)."""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

from lvdr.errors import DataError
from lvdr.fetch.download import NoNetwork, download, file_md5, get_json
from lvdr.files import read_json, write_json

log = logging.getLogger(__name__)
TABLES = ("overview.csv", "radiological_gradings.csv")
ARCHIVES = ("images.zip", "masks.zip")
EVIDENCE = "demo_evidence.csv"  # written by the demo generator only
RECORD_PAGE = "https://zenodo.org/records/{record}"


def check_folder(root: Path) -> None:
    """A SPIDER folder holds the two tables and the images/ and masks/ folders of .mha files."""
    missing = [name for name in TABLES if not (root / name).is_file()]
    missing += [name + "/" for name in ("images", "masks") if not (root / name).is_dir()]
    if missing:
        raise DataError(f"{root}: not a SPIDER folder, missing {', '.join(missing)}")


def _unpack(archive: Path, target: Path) -> None:
    """Unpack a zip of .mha files into ``target`` (once; a marker records completion)."""
    marker = target / ".unpacked"
    if marker.exists():
        return
    scratch = target.with_name(f".{target.name}.unpacking")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(scratch)
    except (zipfile.BadZipFile, OSError) as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise DataError(f"{archive}: cannot unpack ({exc}); delete it and run fetch again") from None
    holders = sorted({p.parent for p in scratch.rglob("*.mha")}, key=lambda p: len(p.parts))
    if not holders:
        shutil.rmtree(scratch)
        raise DataError(f"{archive}: holds no .mha files")
    shutil.rmtree(target, ignore_errors=True)
    holders[0].rename(target)
    shutil.rmtree(scratch, ignore_errors=True)
    marker.touch()


def _hand_instructions(cfg: dict, root: Path) -> str:
    page = RECORD_PAGE.format(record=cfg["zenodo_record"])
    return (
        f"Without network, download {', '.join(TABLES + ARCHIVES)} from {page} and put them in {root} "
        "(fetch then verifies and unpacks them), or unpack them yourself and set spider.source: folder "
        "and spider.path: <that folder> in your config."
    )


def fetch_zenodo(cfg: dict, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    record_file = root / "zenodo_record.json"
    url = f"{cfg['zenodo_api'].rstrip('/')}/{cfg['zenodo_record']}"
    try:
        record = get_json(url)
        write_json(record_file, record)
    except NoNetwork as exc:
        if record_file.exists():
            log.warning("%s; using the record saved in %s", exc, record_file)
            record = read_json(record_file)
        elif all((root / name).is_file() for name in TABLES + ARCHIVES):
            log.warning("%s; using the files already in %s without checksums", exc, root)
            record = {"files": []}
        else:
            raise NoNetwork(f"{exc}. {_hand_instructions(cfg, root)}") from None
    entries = {entry["key"]: entry for entry in record.get("files", [])}
    for name in TABLES + ARCHIVES:
        entry = entries.get(name)
        if entry is None:
            if not (root / name).is_file():
                raise DataError(f"{url}: the record lists no file {name}. {_hand_instructions(cfg, root)}")
            continue
        algo, _, digest = entry.get("checksum", "md5:").partition(":")
        file_url = entry.get("links", {}).get("self") or f"{url}/files/{name}/content"
        try:
            download(file_url, root / name, md5=digest if algo == "md5" and digest else None, size=entry.get("size"))
        except NoNetwork as exc:
            raise NoNetwork(f"{exc}. {_hand_instructions(cfg, root)}") from None
    for archive in ARCHIVES:
        _unpack(root / archive, root / archive.removesuffix(".zip"))


def fetch(cfg: dict, out_dir: Path, seed: int) -> dict:
    """Make ``out_dir``'s manifest point at a complete SPIDER folder."""
    from lvdr.fetch import make_demo, user_folder

    source = cfg["source"]
    if source == "demo":
        root = make_demo("spider", cfg, out_dir, seed)
    elif source == "folder":
        root = user_folder("spider", cfg)
    else:
        root = out_dir / "zenodo"
        fetch_zenodo(cfg, root)
    check_folder(root)
    extra = {"evidence": EVIDENCE} if (root / EVIDENCE).is_file() else {}
    tables = ("overview.csv", "radiological_gradings.csv")
    return {"dataset": "spider", "source": source, "root": root, "overview": tables[0], "gradings": tables[1],
            "images": "images", "masks": "masks", "checksums": {t: f"md5 {file_md5(root / t)}" for t in tables}, **extra}
