"""The MLflow store: where runs, models, metrics and per-sample attack records live.

Layout (DESIGN.md): one experiment per manifest, a parent run per condition, a child run per seed
and role; a run with the same `config_hash` whose model was logged is reused instead of retrained.
Runs never stay RUNNING: an interrupt ends them KILLED, an exception FAILED with the reason as a tag.
"""

import copy
import fcntl
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from suite import __version__
from suite.errors import StoreError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import mlflow  # noqa: E402
import mlflow.pytorch  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME  # noqa: E402

logging.getLogger("mlflow").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.ERROR)

MODEL_TAG = "suite.model_uri"
ERROR_TAG = "suite.error"
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", f"suite=={__version__}"]


def default_store_dir() -> Path:
    """`mlruns/` under the current directory, as an absolute path."""
    return Path.cwd().resolve() / "mlruns"


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else an absolute sqlite URI under ./mlruns (a relative one would
    resolve against whatever directory a later process starts in)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_store_dir() / 'mlflow.db'}"


def artifact_root() -> str:
    """Where new experiments put artifacts when the store is the local SQLite one."""
    return (default_store_dir() / "artifacts").as_uri()


def git_commit() -> str:
    """The commit of the suite's source tree, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


class Store:
    """A handle on one MLflow tracking store, created once by the parent process."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        self.commit = git_commit()
        with _creation_lock(self.uri):
            try:
                self.client = MlflowClient(self.uri)
                self.client.search_experiments(max_results=1)  # creates the tables of a new store
            except Exception as exc:  # any backend failure: the user must fix the URI or server
                raise StoreError(
                    f"MLflow store {self.uri} is not usable ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}); check MLFLOW_TRACKING_URI"
                ) from None

    # ---- experiments and runs -------------------------------------------------------------

    def experiment_id(self, name: str, create: bool = True) -> str:
        """The id of experiment `name`, created with artifacts under mlruns/artifacts if missing."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        if not create:
            raise StoreError(f"no experiment named {name!r} in {self.uri}; `suite list` shows them")
        location = artifact_root() if self.uri.startswith("sqlite:") else None
        return self.client.create_experiment(name, artifact_location=location)

    def base_tags(self) -> dict[str, str]:
        return {
            "suite_version": __version__,
            "git_commit": self.commit,
            "suite.host": socket.gethostname(),
            "suite.pid": str(os.getpid()),
        }

    def reap_stale(self, experiment_id: str) -> list[str]:
        """Mark FAILED the RUNNING runs whose process (on this host) is gone, e.g. after `kill -9`."""
        host = socket.gethostname()
        reaped = []
        for run in self.client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
            tags = run.data.tags
            pid = tags.get("suite.pid", "")
            if tags.get("suite.host") != host or not pid.isdigit() or _alive(int(pid)):
                continue
            self.client.set_tag(run.info.run_id, ERROR_TAG, f"process {pid} died while running")
            self.client.set_terminated(run.info.run_id, "FAILED")
            reaped.append(run.info.run_id)
        return reaped

    def find_run(self, experiment_id: str, tags: dict[str, str]):
        """The newest run whose tags equal `tags`, or None."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        runs = self.client.search_runs(
            [experiment_id], " and ".join(clauses), order_by=["attributes.start_time DESC"]
        )
        return runs[0] if runs else None

    def find_model_run(self, experiment_id: str, config_hash: str):
        """A run with this config hash whose model was logged: reusable without retraining."""
        for run in self.client.search_runs(
            [experiment_id],
            f"tags.config_hash = '{config_hash}'",
            order_by=["attributes.start_time DESC"],
        ):
            if MODEL_TAG in run.data.tags:
                return run
        return None

    def parent_run(self, experiment_id: str, condition: str, kind: str, cfg_hash: str) -> str:
        """The condition's parent run: reused when its config hash matches, else created."""
        tags = {"suite.level": "condition", "condition": condition, "config_hash": cfg_hash}
        run = self.find_run(experiment_id, tags)
        if run is not None:
            return run.info.run_id
        all_tags = {**tags, **self.base_tags(), "kind": kind, MLFLOW_RUN_NAME: condition}
        return self.client.create_run(experiment_id, tags=all_tags, run_name=condition).info.run_id

    def create_child(
        self, experiment_id: str, parent_id: str, name: str, tags: dict[str, str], params: dict
    ) -> str:
        """A new child run under `parent_id` with its tags and flattened params."""
        all_tags = {
            **tags,
            **self.base_tags(),
            MLFLOW_PARENT_RUN_ID: parent_id,
            MLFLOW_RUN_NAME: name,
        }
        run_id = self.client.create_run(experiment_id, tags=all_tags, run_name=name).info.run_id
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])
        return run_id

    @contextmanager
    def active(self, run_id: str) -> Iterator[str]:
        """Make `run_id` the active (RUNNING) run; end it FINISHED, KILLED on Ctrl-C, FAILED on error."""
        mlflow.start_run(run_id=run_id)
        self._claim(run_id)
        try:
            yield run_id
        except KeyboardInterrupt:
            mlflow.end_run("KILLED")
            raise
        except BaseException as exc:
            self.client.set_tag(run_id, ERROR_TAG, f"{type(exc).__name__}: {exc}"[:4000])
            mlflow.end_run("FAILED")
            raise
        mlflow.end_run("FINISHED")

    @contextmanager
    def scope(self, run_ids: list[str]) -> Iterator[dict[str, str]]:
        """Hold background runs (conditions' parent runs) RUNNING while the body works; then end
        each with the status the body put in the yielded dict (default FINISHED), or all KILLED on
        Ctrl-C, FAILED on an exception."""
        for run_id in run_ids:
            self.client.update_run(run_id, status="RUNNING")
            self._claim(run_id)
        outcome: dict[str, str] = {}
        try:
            yield outcome
        except KeyboardInterrupt:
            self._end_all(run_ids, "KILLED")
            raise
        except BaseException as exc:
            for run_id in run_ids:
                self.client.set_tag(run_id, ERROR_TAG, f"{type(exc).__name__}: {exc}"[:4000])
            self._end_all(run_ids, "FAILED")
            raise
        for run_id in run_ids:
            self.client.set_terminated(run_id, outcome.get(run_id, "FINISHED"))

    def _end_all(self, run_ids: list[str], status: str) -> None:
        for run_id in run_ids:
            self.client.set_terminated(run_id, status)

    def _claim(self, run_id: str) -> None:
        """Record which process holds the run, so a later run can tell a dead holder (reap_stale)."""
        self.set_tags(run_id, {"suite.pid": str(os.getpid()), "suite.host": socket.gethostname()})

    # ---- logging -----------------------------------------------------------------------------

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Log many metrics in one call (one SQLite round trip instead of one per metric)."""
        now = _now_ms()
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_model(self, run_id: str, model: torch.nn.Module) -> str:
        """Log a CPU copy of `model` (pickled, with pinned requirements: no slow inference) into the
        active run; the caller's model stays on its device and in its mode."""
        assert mlflow.active_run() and mlflow.active_run().info.run_id == run_id
        model = copy.deepcopy(model).cpu().eval()
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            pip_requirements=PIP_REQUIREMENTS,
            input_example=np.zeros((2, 1, 28, 28), dtype=np.float32),
            serialization_format="pickle",
        )
        self.client.set_tag(run_id, MODEL_TAG, info.model_uri)
        return info.model_uri

    def load_model(self, run) -> torch.nn.Module:
        """The model logged in `run`, in eval mode on the CPU."""
        return mlflow.pytorch.load_model(run.data.tags[MODEL_TAG], map_location="cpu").eval()

    def log_artifact_bytes(self, run_id: str, relpath: str, write) -> None:
        """Write an artifact through `write(path)` into a temp dir and upload it under `relpath`."""
        rel = Path(relpath)
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / rel.name
            write(target)
            self.client.log_artifact(
                run_id, str(target), str(rel.parent) if rel.parent.parts else None
            )

    def log_table(self, run_id: str, relpath: str, frame: pd.DataFrame) -> None:
        self.log_artifact_bytes(run_id, relpath, lambda p: frame.to_parquet(p, index=False))

    def load_table(self, run_id: str, relpath: str) -> pd.DataFrame:
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, relpath, tmp)
            return pd.read_parquet(local)

    def log_report(self, experiment_id: str, folder: Path) -> str:
        """A `report` run in the experiment holding the rendered report folder as artifacts."""
        tags = {"suite.level": "report", **self.base_tags(), MLFLOW_RUN_NAME: "report"}
        run_id = self.client.create_run(experiment_id, tags=tags, run_name="report").info.run_id
        self.client.log_artifacts(run_id, str(folder), "report")
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def log_text(self, run_id: str, relpath: str, text: str) -> None:
        self.log_artifact_bytes(run_id, relpath, lambda p: p.write_text(text, encoding="utf-8"))


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


@contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Serialise first contact with a SQLite store across processes: two processes creating the
    tables of a new database at once race (mlflow#4123)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now_ms() -> int:
    return int(time.time() * 1000)
