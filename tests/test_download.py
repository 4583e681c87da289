"""The downloader against a local HTTP server on 127.0.0.1 serving a copy of ../shared/data."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dilran_lite import download
from dilran_lite.data import PAIRS, PairedDataset
from dilran_lite.download import (
    MAX_CONNECTION_FAILURES,
    DownloadError,
    download_atlas,
    load_manifest,
    verify_atlas,
)

NAMES = ["2004.png", "34002.png", "20005.png"]  # one pair of each series split: 6 files


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files; records each request; ``cut`` paths get half their body, then a hang-up;
    ``flood`` paths stream that many zero bytes without a Content-Length; ``lie`` paths announce
    that many bytes in their Content-Length (and send the file). With ``gate`` set, the first
    request sets ``entered`` and waits for ``gate`` before it is answered."""

    requests: list[str]
    cut: set[str]
    flood: dict[str, int]
    lie: dict[str, int]
    sent: list[int]
    gate: threading.Event | None
    entered: threading.Event

    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        self.requests.append(self.path)
        if self.gate is not None and not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(30), "the test never opened the gate"
        rel = self.path.lstrip("/")
        if rel in self.flood:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            sent, block = 0, bytes(1 << 16)
            try:
                while sent < self.flood[rel]:
                    self.wfile.write(block)
                    sent += len(block)
            except OSError:  # the client hung up
                pass
            self.sent.append(sent)
            self.close_connection = True
            return
        if rel in self.lie:
            self.send_response(200)
            self.send_header("Content-Length", str(self.lie[rel]))
            self.end_headers()
            self.close_connection = True
            return
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
    handler = type(
        "H",
        (_Handler,),
        {
            "requests": [],
            "cut": set(),
            "flood": {},
            "lie": {},
            "sent": [],
            "gate": None,
            "entered": threading.Event(),
        },
    )
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
    with pytest.raises(DownloadError, match=r"1 failed \(MRI/34002\.png\)") as err:
        download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    msg = str(err.value)
    assert "MRI/34002.png: checksum mismatch" in msg and "deleted" in msg and str(dest) in msg
    assert "5 fetched" in msg and "\n" not in msg
    assert not (dest / "harvard-mri-ct" / "MRI" / "34002.png").exists()
    assert not _leftovers(dest)
    # the bad file did not stop the others
    assert len(server["handler"].requests) == 6
    assert len(list((dest / "harvard-mri-ct").rglob("*.png"))) == 5


def test_missing_file_on_server(server, tmp_path):
    (server["dir"] / "harvard-mri-ct" / "CT" / "20005.png").unlink()
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=r"1 failed \(CT/20005\.png\).*HTTP 404") as err:
        download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    msg = str(err.value)
    assert "check your connection" in msg.lower() and "copy the atlas folder by hand" in msg
    assert not (dest / "harvard-mri-ct" / "CT" / "20005.png").exists()
    assert not _leftovers(dest)


def test_interrupted_transfer(server, tmp_path):
    server["handler"].cut = {"harvard-mri-ct/CT/34002.png"}
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=r"CT/34002\.png: the transfer was interrupted"):
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
    with pytest.raises(DownloadError, match=r"2 failed \(CT/2004\.png, MRI/2004\.png\)") as err:
        download_atlas(
            tmp_path,
            base_url=f"http://127.0.0.1:{port}/",
            names=["2004"],
            progress=False,
            timeout=5,
        )
    msg = str(err.value)
    assert "offline" in msg and "$DILRAN_DATA" in msg and "--base-url" in msg and "phantom" in msg
    assert "\n" not in msg
    assert not _leftovers(tmp_path)
    # many files: stops after a few connection failures instead of trying every one
    with pytest.raises(DownloadError, match=r"3 failed .* not attempted.*offline"):
        download_atlas(
            tmp_path,
            base_url=f"http://127.0.0.1:{port}/",
            names=NAMES,
            progress=False,
            timeout=5,
        )


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


def test_manifests_carry_sizes_that_match_the_files(shared_data):
    for pairs in PAIRS:
        man = load_manifest(pairs)
        assert set(man["size"]) == set(man["sha256"])
        for rel in list(man["size"])[::50]:  # a sample: every 50th file
            path = shared_data / man["dataset"] / rel
            assert path.stat().st_size == man["size"][rel]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == man["sha256"][rel]


def test_a_flooding_server_is_cut_off_at_the_manifest_size(server, tmp_path):
    rel = "harvard-mri-ct/CT/2004.png"
    size = load_manifest("mri-ct")["size"]["CT/2004.png"]
    server["handler"].flood = {rel: 200 << 20}  # 200 MB for a ~13 KB file
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=rf"CT/2004\.png: more than the expected {size} bytes"):
        download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    assert not (dest / "harvard-mri-ct" / "CT" / "2004.png").exists()
    assert not _leftovers(dest)
    assert len(list((dest / "harvard-mri-ct").rglob("*.png"))) == 5  # the others were fetched


def test_streaming_reads_no_more_than_the_size(monkeypatch, tmp_path):
    """Against an endless response: the downloader reads at most size + 1 bytes."""
    import io

    from dilran_lite import download

    class Endless(io.RawIOBase):
        headers: dict = {}
        read_total = 0

        def read(self, n=-1):
            n = 1 << 20 if n is None or n < 0 else n
            Endless.read_total += n
            return b"\0" * n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: Endless())
    with pytest.raises(DownloadError, match="more than the expected 1000 bytes"):
        download._fetch("http://x/", tmp_path / "f.png", "0" * 64, 1000, 1.0)
    assert Endless.read_total <= 1001
    assert not list(tmp_path.iterdir())


def test_an_announced_oversize_is_refused_before_reading(server, tmp_path):
    server["handler"].lie = {"harvard-mri-ct/MRI/2004.png": 200 << 20}
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=r"MRI/2004\.png: the server announces 209715200 bytes"):
        download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    assert not _leftovers(dest)


def test_stale_part_files_of_a_killed_run_are_removed_and_no_others(server, tmp_path):
    dest = tmp_path / "dest"
    ct = dest / "harvard-mri-ct" / "CT"
    ct.mkdir(parents=True)
    ours = [
        ct / ".2004.png.dilran-download-k1ll3d.part",
        ct.parent / ".splits.json.dilran-download-x.part",
    ]
    theirs = [ct / ".notes.part", ct / "draft.part", ct.parent / ".2004.png.abc.part"]
    for p in ours + theirs:
        p.write_bytes(b"half a file")
    download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=False)
    assert not any(p.exists() for p in ours)
    assert all(p.read_bytes() == b"half a file" for p in theirs)


@pytest.mark.parametrize(
    "rel, why",
    [
        ("MRI/../../../x.png", "not MRI/CT-folder/NAME.png"),
        ("/etc/x.png", "not MRI/CT-folder/NAME.png"),
        ("PET/x.png", "not MRI/CT-folder/NAME.png"),
        ("MRI/sub/x.png", "not MRI/CT-folder/NAME.png"),
        ("MRI/x.exe", "not MRI/CT-folder/NAME.png"),
    ],
)
def test_manifest_entries_are_validated_before_any_request(tmp_path, monkeypatch, rel, why):
    from dilran_lite import download

    requests = []
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: requests.append(a))
    man = load_manifest("mri-ct")
    man = {**man, "sha256": {rel: "0" * 64}, "size": {rel: 10}}
    with pytest.raises(DownloadError, match=re.escape(f"entry {rel!r} is refused: {why}")):
        download_atlas(tmp_path / "d", base_url="http://127.0.0.1:9/", manifest=man, progress=False)
    assert requests == []
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "d").exists()


def test_manifest_values_are_validated(tmp_path):
    man = load_manifest("mri-ct")
    bad_hex = {**man, "sha256": {"MRI/1.png": "xyz"}}
    with pytest.raises(DownloadError, match="not 64 lowercase hex"):
        download_atlas(tmp_path, manifest=bad_hex, progress=False)
    bad_size = {**man, "sha256": {"MRI/1.png": "0" * 64}, "size": {"MRI/1.png": 0}}
    with pytest.raises(DownloadError, match="size 0 is not a positive integer"):
        download_atlas(tmp_path, manifest=bad_size, progress=False)
    other = {**man, "dataset": "../elsewhere"}
    with pytest.raises(DownloadError, match="expected 'harvard-mri-ct'"):
        download_atlas(tmp_path, manifest=other, progress=False)


def test_summary_line_with_progress(server, tmp_path, capsys):
    dest = tmp_path / "dest"
    download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=True)
    out = capsys.readouterr().out
    assert "3 pairs (6 files), 0 already verified, 6 fetched, 0 failed" in out
    download_atlas(dest, "mri-ct", base_url=server["url"], names=NAMES, progress=True)
    assert "6 already verified, 0 fetched, 0 failed" in capsys.readouterr().out


# --- two downloads into one folder ------------------------------------------------------------


def _in_thread(results: dict, key: str, **kwargs) -> threading.Thread:
    def run():
        try:
            results[key] = download_atlas(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            results[key] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def first_download_mid_transfer(server, tmp_path, monkeypatch):
    """A download held inside its first request (its temporary file open), and an event set when
    another download finds the folder locked."""
    server["handler"].gate = threading.Event()
    blocked = threading.Event()
    real = download._try_lock

    def spy(fd):
        got = real(fd)
        if got is False:
            blocked.set()
        return got

    monkeypatch.setattr(download, "_try_lock", spy)
    args = dict(dest=tmp_path / "dest", base_url=server["url"], names=NAMES, progress=False)
    results: dict = {}
    first = _in_thread(results, "first", **args)
    assert server["handler"].entered.wait(30)
    assert _leftovers(tmp_path / "dest")  # its temporary file exists
    yield args, results, first, blocked
    server["handler"].gate.set()
    first.join(30)


def test_two_downloads_into_one_folder_at_once(server, first_download_mid_transfer, capsys):
    """The second waits for the first (it used to delete the first's temporary file)."""
    args, results, first, blocked = first_download_mid_transfer
    second = _in_thread(results, "second", **{**args, "progress": True})
    assert blocked.wait(30)  # the second found the folder locked and waits
    server["handler"].gate.set()
    first.join(30)
    second.join(30)
    folder = args["dest"] / "harvard-mri-ct"
    assert results == {"first": folder, "second": folder}
    out = capsys.readouterr().out
    assert f"Another download is running in {folder}; waiting for it to finish." in out
    assert "3 pairs (6 files), 6 already verified, 0 fetched, 0 failed" in out
    assert len(server["handler"].requests) == 6  # every file fetched once, by the first
    man = load_manifest("mri-ct")
    for rel in (f"{m}/{n}" for m in PAIRS["mri-ct"] for n in NAMES):
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == man["sha256"][rel]
    assert not _leftovers(args["dest"])


def test_a_second_download_that_will_not_wait_says_so_in_one_line(first_download_mid_transfer):
    args, results, first, blocked = first_download_mid_transfer
    folder = args["dest"] / "harvard-mri-ct"
    with pytest.raises(
        DownloadError, match=f"another download is running in {re.escape(str(folder))}"
    ):
        download_atlas(**args, wait=0)
    assert blocked.is_set()
    assert _leftovers(args["dest"])  # the first's temporary file is untouched


def test_the_lock_ends_with_a_killed_process(server, tmp_path):
    folder = tmp_path / "dest" / "harvard-mri-ct"
    code = (
        "import sys, time; from pathlib import Path; from dilran_lite.download import folder_lock\n"
        "with folder_lock(Path(sys.argv[1])) as locked:\n"
        "    print(locked, flush=True); time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        with pytest.raises(DownloadError, match="another download is running in"):
            download_atlas(tmp_path / "dest", base_url=server["url"], names=NAMES, wait=0)
    finally:
        holder.kill()
        holder.wait(30)
        holder.stdout.close()
    stale = folder / "CT" / ".2004.png.dilran-download-k1ll3d.part"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")
    download_atlas(tmp_path / "dest", base_url=server["url"], names=NAMES, progress=False, wait=0)
    assert not stale.exists() and len(server["handler"].requests) == 6


def test_downloaded_files_get_the_umask_mode(server, tmp_path):
    old = os.umask(0o022)
    try:
        folder = download_atlas(tmp_path, base_url=server["url"], names=NAMES, progress=False)
    finally:
        os.umask(old)
    for path in (folder / "CT" / "2004.png", folder / "MRI" / "2004.png", folder / "sha256.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_mirror_answering_404_from_the_start_is_unreachable(server, tmp_path):
    """A wrong mirror address (every file 404) stops after the first few files, as a refused
    connection does, and the message names the mirror setting."""
    dest = tmp_path / "dest"
    url = server["url"].rstrip("/") + "/no-such-folder"
    with pytest.raises(DownloadError, match="offline, or the source is unreachable") as err:
        download_atlas(dest, "mri-ct", base_url=url, names=NAMES, progress=False)
    assert "DILRAN_MIRROR" in str(err.value)
    assert len(server["handler"].requests) == MAX_CONNECTION_FAILURES
