"""Where the store and its UI live: the tracking URI (default: SQLite under ./mlruns), the UI's
address, and the checks made before anything connects or listens: a tracking server must answer
its health check within seconds, and `suite ui` must be able to bind its host and port, each
failure one line naming the address and the fix (MLflow's own client retries for minutes)."""

import os
import re
import socket
import urllib.parse
from pathlib import Path

from suite.errors import StoreError
from suite.redact import redact
from suite.sqlite_store import sqlite_file

CONNECT_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 10.0  # a tracking server's health check must answer within this
# MLflow 3's UI opens an experiment on its GenAI "Traces" view unless told it holds trained models:
# the experiment-kind tag, and (3.17's UI, whose GenAI / Model training switch overrides the tag) the
# workflow in the URL, which the UI then remembers.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
UI_WORKFLOW = "workflowType=machine_learning"
UI_VIEW_TAG, UI_VIEW_KEY = "mlflow.sharedViewState.", "suite"  # the runs table's columns
HOST_PATTERN = re.compile(r"[A-Za-z0-9.\-]{1,253}|[0-9A-Fa-f:.]{2,45}")  # a name, IPv4 or IPv6


def check_bindable(host: str, port: int) -> None:
    """StoreError (one line) unless a server can listen on `host`:`port` now: the port in range,
    the host an address of this machine, the port not taken."""
    if not 1 <= port <= 65535:
        raise StoreError(f"--port {port}: not a TCP port; choose one in 1-65535")
    if not HOST_PATTERN.fullmatch(host):
        raise StoreError(f"--host {host!r}: not a host name or IP address; e.g. 127.0.0.1")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise StoreError(f"--host {host!r}: not an address of this machine ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(address)
        except OSError as exc:
            raise StoreError(
                f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
                "choose another --port (or stop what holds it)"
            ) from None


def check_reachable(uri: str) -> None:
    """Fail within seconds, naming the URI, unless an HTTP tracking server answers its health check:
    a refused connection, a server that accepts and never answers (HEALTH_TIMEOUT_S), and one that
    answers 5xx are each one line (MLflow's own client retries for minutes without a word)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    import requests

    shown = redact(uri)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        auth = (parts.username, parts.password or "") if parts.username else None
        url = f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}/health"
        answer = requests.get(
            url, timeout=(CONNECT_TIMEOUT_S, HEALTH_TIMEOUT_S), auth=auth, allow_redirects=False
        )
    except requests.Timeout:
        raise StoreError(
            f"MLflow server {shown} accepted the connection but did not answer within "
            f"{HEALTH_TIMEOUT_S:g} s; check the server or fix MLFLOW_TRACKING_URI"
        ) from None
    except (requests.RequestException, ValueError) as exc:
        raise StoreError(
            f"MLflow server {shown} is unreachable ({redact(type(exc).__name__)}: "
            f"{redact(str(exc))[:200]}); start it or fix MLFLOW_TRACKING_URI"
        ) from None
    if answer.status_code >= 500:
        raise StoreError(
            f"MLflow server {shown} answers HTTP {answer.status_code} to its health check; "
            "check the server's log or fix MLFLOW_TRACKING_URI"
        )


def ui_url(host: str, port: int, experiment_id: str) -> str:
    """The MLflow UI address that opens `experiment_id` on its training runs, with the columns
    `Store.show_in_ui` chose."""
    shown = f"[{host}]" if ":" in host else host
    return (
        f"http://{shown}:{port}/#/experiments/{experiment_id}/runs?{UI_WORKFLOW}"
        f"&viewStateShareKey={UI_VIEW_KEY}"
    )


def default_store_dir() -> Path:
    """`mlruns/` under the current directory, as an absolute path."""
    return Path.cwd().resolve() / "mlruns"


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else an absolute sqlite URI under ./mlruns (a relative one would
    resolve against whatever directory a later process starts in)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_store_dir() / 'mlflow.db'}"


def artifact_root(uri: str) -> str:
    """Where new experiments of the SQLite store at `uri` put their artifacts: `artifacts/` beside
    the database file, wherever the command runs (not under the current directory, which put a
    store's artifacts wherever a command happened to start)."""
    db = sqlite_file(uri)
    return ((db.parent if db else default_store_dir()) / "artifacts").as_uri()
