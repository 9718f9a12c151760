"""The real SPIDER download code, run against a local stand-in for Zenodo (no network needed)."""

import hashlib
import json
import shutil
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lvdr import fetch, prepare
from lvdr.errors import DataError
from lvdr.fetch.download import NoNetwork

RECORD = "10159290"


def zip_folder(folder, target):
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*.mha")):
            zf.write(path, f"{folder.name}/{path.name}")
    return target.read_bytes()


@pytest.fixture
def zenodo(spider_demo, tmp_path):
    """A local server with Zenodo's record API and file downloads (with HTTP range support)."""
    files = {name: (spider_demo / name).read_bytes() for name in ("overview.csv", "radiological_gradings.csv")}
    for name in ("images", "masks"):
        files[f"{name}.zip"] = zip_folder(spider_demo / name, tmp_path / f"{name}.zip")
    state = {"files": dict(files), "ranges": [], "corrupt": set()}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            port = self.server.server_address[1]
            if self.path == f"/api/records/{RECORD}":
                body = json.dumps({"files": [
                    {"key": k, "size": len(v), "checksum": "md5:" + hashlib.md5(v).hexdigest(),
                     "links": {"self": f"http://127.0.0.1:{port}/files/{k}"}} for k, v in files.items()]}).encode()
                status = 200
            elif self.path.startswith("/files/"):
                key = self.path.removeprefix("/files/")
                body = state["files"][key]
                if key in state["corrupt"]:
                    body = body[:-10] + b"0123456789"
                status = 200
                if "Range" in self.headers:
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    state["ranges"].append((key, start))
                    body, status = body[start:], 206
            else:
                self.send_error(404)
                return
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["api"] = f"http://127.0.0.1:{server.server_address[1]}/api/records"
    yield state
    server.shutdown()


def spider_cfg(tiny_config, api):
    return {**tiny_config["spider"], "source": "zenodo", "zenodo_api": api, "zenodo_record": RECORD}


def test_download_verify_unpack_prepare(zenodo, tmp_path, tiny_config):
    cfg = spider_cfg(tiny_config, zenodo["api"])
    manifest = fetch.run("spider", cfg, tmp_path / "raw", seed=3)
    root = tmp_path / "raw" / "zenodo"
    assert sorted(p.name for p in (root / "images").glob("*.mha")) == [f"{i}_t2.mha" for i in range(1, 7)]
    table = prepare.run("spider", cfg, manifest, tmp_path / "prep", seed=3)
    assert table.seq_id.nunique() == 12
    # a second fetch finds every file in place and verified: nothing is downloaded again
    zenodo["files"].clear()
    fetch.run("spider", cfg, tmp_path / "raw", seed=3)


def test_interrupted_download_resumes(zenodo, tmp_path, tiny_config):
    root = tmp_path / "raw" / "zenodo"
    root.mkdir(parents=True)
    whole = zenodo["files"]["images.zip"]
    (root / "images.zip.part").write_bytes(whole[: len(whole) // 2])
    fetch.run("spider", spider_cfg(tiny_config, zenodo["api"]), tmp_path / "raw", seed=3)
    assert ("images.zip", len(whole) // 2) in zenodo["ranges"]
    assert (root / "images.zip").read_bytes() == whole
    assert not (root / "images.zip.part").exists()


def test_checksum_mismatch_is_an_error_and_leaves_no_file(zenodo, tmp_path, tiny_config):
    zenodo["corrupt"].add("masks.zip")
    with pytest.raises(DataError, match="masks.zip: checksum mismatch"):
        fetch.run("spider", spider_cfg(tiny_config, zenodo["api"]), tmp_path / "raw", seed=3)
    root = tmp_path / "raw" / "zenodo"
    assert not (root / "masks.zip").exists() and not (root / "masks.zip.part").exists()


def test_no_network_says_what_to_do_by_hand(tmp_path, tiny_config):
    cfg = spider_cfg(tiny_config, "http://127.0.0.1:9/api/records")  # nothing listens on the discard port
    with pytest.raises(NoNetwork, match=r"cannot reach .*Without network, download overview.csv.*records/10159290"):
        fetch.run("spider", cfg, tmp_path / "raw", seed=3)


def test_files_placed_by_hand_work_without_network(zenodo, tmp_path, tiny_config, warnings_logged):
    root = tmp_path / "raw" / "zenodo"
    root.mkdir(parents=True)
    for name, body in zenodo["files"].items():
        (root / name).write_bytes(body)
    cfg = spider_cfg(tiny_config, "http://127.0.0.1:9/api/records")
    manifest = fetch.run("spider", cfg, tmp_path / "raw", seed=3)
    assert "without checksums" in warnings_logged.text
    assert manifest.exists() and (root / "masks" / "1_t2.mha").exists()
    shutil.rmtree(root)
