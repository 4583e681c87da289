"""The downloader against a local HTTP server on 127.0.0.1 serving a copy of ../shared/data."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from dilran_lite.data import PAIRS, PairedDataset
from dilran_lite.download import DownloadError, download_atlas, load_manifest, verify_atlas

NAMES = ["2004.png", "34002.png", "20005.png"]  # one pair of each series split: 6 files


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files; records each request; ``cut`` paths get half their body, then a hang-up."""

    requests: list[str]
    cut: set[str]

    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        self.requests.append(self.path)
        if self.path.lstrip("/") in self.cut:
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path, atlas_root):
    """A temp copy of three MRI-CT pairs, laid out like ../shared/data, served over HTTP."""
    served = tmp_path / "served"
    for n in NAMES:
        for m in PAIRS["mri-ct"]:
            (served / "harvard-mri-ct" / m).mkdir(parents=True, exist_ok=True)
            shutil.copy(atlas_root / m / n, served / "harvard-mri-ct" / m / n)
    handler = type("H", (_Handler,), {"requests": [], "cut": set()})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield {
            "url": f"http://127.0.0.1:{httpd.server_address[1]}/",
            "dir": served,
            "handler": handler,
        }
    finally:
        httpd.shutdown()
        httpd.server_close()


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


def test_manifests_match_shared_checksums_and_splits(shared_data):
    for pairs, n in (("mri-ct", 184), ("mri-pet", 269), ("mri-spect", 357)):
        man = load_manifest(pairs)
        folder = shared_data / man["dataset"]
        assert man["n_pairs"] == n and len(man["sha256"]) == 2 * n
        assert man["sha256"] == json.loads((folder / "sha256.json").read_text())
        assert man["splits"] == json.loads((folder / "splits.json").read_text())
        assert man["source"]["base_url"].startswith("https://")
        assert "{modality}" in man["source"]["path_template"]
    man = load_manifest("mri-ct")
    rel = "CT/2004.png"
    digest = hashlib.sha256((shared_data / "harvard-mri-ct" / rel).read_bytes()).hexdigest()
    assert man["sha256"][rel] == digest


def test_download_verify_and_idempotent(server, tmp_path):
    dest = tmp_path / "dest"
    folder = download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    assert folder == dest / "harvard-mri-ct"
    assert len(server["handler"].requests) == 6
    for n in NAMES:
        for m in ("MRI", "CT"):
            served = server["dir"] / "harvard-mri-ct" / m / n
            assert (folder / m / n).read_bytes() == served.read_bytes()
    splits = json.loads((folder / "splits.json").read_text())
    assert len(splits["series"]["test"]) == 41
    assert PairedDataset(folder).names == sorted(NAMES, key=lambda s: int(s[:-4]))
    # second run: everything verified, nothing fetched
    download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    assert len(server["handler"].requests) == 6
    # a damaged local file is fetched again, and only that one
    (folder / "CT" / "2004.png").write_bytes(b"garbage")
    download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    assert server["handler"].requests[6:] == ["/harvard-mri-ct/CT/2004.png"]
    assert verify_atlas("mri-ct", dest)["corrupt"] == []
    assert not _leftovers(dest)


def test_corrupted_file_on_server(server, tmp_path):
    bad = server["dir"] / "harvard-mri-ct" / "MRI" / "34002.png"
    raw = bytearray(bad.read_bytes())
    raw[100] ^= 0xFF
    bad.write_bytes(bytes(raw))
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=r"checksum mismatch for .*MRI/34002\.png") as err:
        download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    assert "deleted" in str(err.value) and str(dest) in str(err.value)
    assert not (dest / "harvard-mri-ct" / "MRI" / "34002.png").exists()
    assert not _leftovers(dest)


def test_missing_file_on_server(server, tmp_path):
    (server["dir"] / "harvard-mri-ct" / "CT" / "20005.png").unlink()
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=r"20005\.png.*HTTP 404") as err:
        download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    msg = str(err.value)
    assert "check your connection" in msg.lower() and "copy the atlas folder by hand" in msg
    assert not (dest / "harvard-mri-ct" / "CT" / "20005.png").exists()
    assert not _leftovers(dest)


def test_interrupted_transfer(server, tmp_path):
    server["handler"].cut = {"harvard-mri-ct/CT/34002.png"}
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=r"CT/34002\.png.*interrupted"):
        download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    assert not (dest / "harvard-mri-ct" / "CT" / "34002.png").exists()
    assert not _leftovers(dest)
    # the server recovers: the next run completes, fetching only what is missing
    server["handler"].cut = set()
    before = len(server["handler"].requests)
    download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    fetched = server["handler"].requests[before:]
    assert "/harvard-mri-ct/CT/34002.png" in fetched and len(fetched) < 6
    assert verify_atlas("mri-ct", dest)["missing"] == [
        r for r in sorted(load_manifest("mri-ct")["sha256"]) if r.split("/")[1] not in NAMES
    ]


def test_network_error_names_file_and_advice(tmp_path):
    # a port nobody listens on: connection refused
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DownloadError, match=r"could not fetch .*CT/2004\.png") as err:
        download_atlas(
            tmp_path,
            base_url=f"http://127.0.0.1:{port}/",
            names=["2004"],
            progress=False,
            timeout=5,
        )
    assert "copy the atlas folder by hand" in str(err.value)
    assert not _leftovers(tmp_path)


def test_file_url_and_template(tmp_path, atlas_root):
    # a mirror with the public repository's layout (CT-MRI/<MODALITY>/<NAME>) via file://
    mirror = tmp_path / "mirror"
    for m in ("MRI", "CT"):
        (mirror / "CT-MRI" / m).mkdir(parents=True)
        shutil.copy(atlas_root / m / "2004.png", mirror / "CT-MRI" / m / "2004.png")
    folder = download_atlas(
        tmp_path / "d",
        base_url=mirror.as_uri(),
        names=["2004.png"],
        url_template="CT-MRI/{modality}/{name}",
        progress=False,
    )
    got = (folder / "CT" / "2004.png").read_bytes()
    assert got == (atlas_root / "CT" / "2004.png").read_bytes()
    with pytest.raises(ValueError, match="not in the mri-ct manifest"):
        download_atlas(tmp_path / "d", base_url=mirror.as_uri(), names=["9999.png"])
