"""Resumable, checksum-verified HTTP downloads (standard library only)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from lvdr.errors import DataError, LvdrError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class NoNetwork(LvdrError):
    """The server could not be reached; the message says what to do by hand."""


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, headers: dict | None = None, timeout: float = 60):
    request = urllib.request.Request(url, headers={"User-Agent": "lvdr", **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: server answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NoNetwork(f"cannot reach {url} ({reason})") from None


def get_json(url: str) -> dict:
    with _open(url) as response:
        return json.load(response)


def download(url: str, dest: Path, md5: str | None = None, size: int | None = None) -> Path:
    """Download ``url`` to ``dest``, resuming a previous ``.part`` file; verify ``md5`` before renaming."""
    dest = Path(dest)
    if dest.exists() and (md5 is None or file_md5(dest) == md5):
        log.info("%s: already present%s", dest, ", checksum ok" if md5 else "")
        return dest
    if dest.exists():
        log.warning("%s: checksum differs from the record; downloading again", dest)
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    done = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    with _open(url, headers) as response:
        if done and response.status != 206:  # server ignored the range: start over
            log.info("%s: server cannot resume, restarting download", dest.name)
            done = 0
        total = size or (done + int(response.headers.get("Content-Length", 0)) or None)
        with open(part, "ab" if done else "wb") as fh, tqdm(
            total=total, initial=done, unit="B", unit_scale=True, desc=dest.name
        ) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                fh.write(block)
                bar.update(len(block))
    if md5 is not None:
        got = file_md5(part)
        if got != md5:
            part.unlink()
            raise DataError(f"{dest}: checksum mismatch (md5 {got}, expected {md5}); the partial file was removed, run fetch again")
    os.replace(part, dest)
    return dest
