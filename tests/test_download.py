"""The MNIST downloader against a loopback HTTP server: mirrors, checksums and failures."""

import gzip
import hashlib
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from suite.data import DataError, download_mnist, read_idx

LABELS = np.arange(10, dtype=np.uint8)
GOOD = {
    "train-labels-idx1-ubyte.gz": gzip.compress(
        struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x07" * 10
    ),
    "t10k-labels-idx1-ubyte.gz": gzip.compress(
        struct.pack(">BBBBI", 0, 0, 8, 1, 10) + LABELS.tobytes()
    ),
}
FILES = tuple((name, hashlib.md5(body).hexdigest()) for name, body in GOOD.items())
FIRST = FILES[0][0]


class Mirrors:
    """A loopback HTTP server; `routes` maps a path to (behaviour, body), `requests` logs paths."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        self.release = threading.Event()
        mirrors = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirrors.requests.append(self.path)
                behaviour, body = mirrors.routes.get(self.path, ("missing", b""))
                if behaviour == "missing":
                    self.send_error(404)
                    return
                if behaviour == "stall":
                    mirrors.release.wait(10)
                declared = len(body) + 1000 if behaviour == "short" else len(body)
                self.send_response(200)
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def serve(
        self, mirror: str, behaviour: str = "ok", bodies: dict[str, bytes] | None = None
    ) -> str:
        """Serve GOOD (with `bodies` swapped in) under /mirror/; returns the mirror URL."""
        for name, body in {**GOOD, **(bodies or {})}.items():
            self.routes[f"/{mirror}/{name}"] = (behaviour, body)
        return f"{self.base}/{mirror}/"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def mirrors(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server = Mirrors()
    yield server
    server.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def assert_downloaded(root, names=tuple(GOOD)) -> None:
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(names)  # no temp files left
    for name in names:
        assert (raw / name).read_bytes() == GOOD[name]


def test_downloads_and_verifies_every_file(tmp_path, mirrors):
    progress = []
    paths = download_mnist(
        tmp_path, [mirrors.serve("m1")], files=FILES, on_progress=lambda *a: progress.append(a)
    )
    assert paths == [tmp_path / "MNIST" / "raw" / name for name in GOOD]
    assert_downloaded(tmp_path)
    np.testing.assert_array_equal(read_idx(paths[1]), LABELS)
    name, body = FIRST, GOOD[FIRST]
    first = [p for p in progress if p[0] == name]
    assert first[0] == (name, 0, len(body)) and first[-1] == (name, len(body), len(body))
    assert [done for _, done, _ in first] == sorted(done for _, done, _ in first)


def test_wrong_checksum_moves_to_the_next_mirror(tmp_path, mirrors):
    bad = mirrors.serve("m1", bodies={FIRST: b"not the file"})
    download_mnist(tmp_path, [bad, mirrors.serve("m2")], files=FILES)
    assert_downloaded(tmp_path)
    assert f"/m1/{FIRST}" in mirrors.requests and f"/m2/{FIRST}" in mirrors.requests


def test_unreachable_first_mirror_is_skipped(tmp_path, mirrors):
    download_mnist(tmp_path, [closed_port_url(), mirrors.serve("m2")], files=FILES)
    assert_downloaded(tmp_path)


def test_truncated_response_is_refused(tmp_path, mirrors):
    short = mirrors.serve("m1", "short")
    download_mnist(tmp_path, [short, mirrors.serve("m2")], files=FILES)
    assert_downloaded(tmp_path)
    assert f"/m1/{FIRST}" in mirrors.requests

    with pytest.raises(DataError, match=r"truncated response: got [\d,]+ of [\d,]+ bytes"):
        download_mnist(tmp_path / "again", [short], files=FILES)
    assert list((tmp_path / "again" / "MNIST" / "raw").iterdir()) == []


def test_stalled_mirror_times_out_to_the_next(tmp_path, mirrors):
    stalled = mirrors.serve("m1", "stall")
    download_mnist(tmp_path, [stalled, mirrors.serve("m2")], files=FILES, timeout=0.2)
    assert_downloaded(tmp_path)
    with pytest.raises(DataError, match=f"{stalled}{FIRST}: timed out after 0.2 s"):
        download_mnist(tmp_path / "again", [stalled], files=FILES, timeout=0.2)


def test_all_mirrors_failing_is_one_line_error_and_leaves_nothing(tmp_path, mirrors):
    wrong = mirrors.serve("m1", bodies={FIRST: b"wrong"})
    closed = closed_port_url()
    with pytest.raises(DataError) as err:
        download_mnist(tmp_path, [wrong, f"{mirrors.base}/empty/", closed], files=FILES)
    message = str(err.value)
    assert "\n" not in message and f"could not download {FIRST}" in message
    assert f"{wrong}{FIRST}: checksum mismatch" in message
    assert f"{mirrors.base}/empty/{FIRST}: HTTP 404" in message
    assert f"{closed}{FIRST}: cannot connect" in message
    assert list((tmp_path / "MNIST" / "raw").iterdir()) == []


def test_present_file_is_kept_and_a_wrong_one_replaced(tmp_path, mirrors):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, body in GOOD.items():
        (raw / name).write_bytes(body)
    progress = []
    download_mnist(
        tmp_path, [mirrors.serve("m1")], files=FILES, on_progress=lambda *a: progress.append(a)
    )
    assert mirrors.requests == []
    assert progress == [(name, len(body), len(body)) for name, body in GOOD.items()]
    assert_downloaded(tmp_path)

    (raw / FIRST).write_bytes(b"stale")
    download_mnist(tmp_path, [mirrors.serve("m1")], files=FILES)
    assert mirrors.requests == [f"/m1/{FIRST}"]
    assert_downloaded(tmp_path)
