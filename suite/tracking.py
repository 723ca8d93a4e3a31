"""The MLflow store: where runs, models, metrics and per-sample attack records live; the only
module that talks to MLflow.

Layout and names: `suite.schema`. A run with the same config hash whose model was logged is reused
instead of retrained, and an attack result whose config-hash tag matches is read back instead of
recomputed (the cache protocol: `reusable_model`, `cached_result`/`save_result`,
`load_chunks`/`save_chunk`). Runs never stay RUNNING: an interrupt ends them KILLED, an exception
FAILED with the reason as a tag.
"""

import json
import logging
import os
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import torch

from suite import __version__, schema
from suite.artifacts import regular_file
from suite.data import DataSplits
from suite.endpoints import (
    EXPERIMENT_KIND,
    UI_VIEW_KEY,
    UI_VIEW_TAG,
    artifact_root,
    check_reachable,
    tracking_uri,
)
from suite.errors import StoreError
from suite.provenance import process_commit
from suite.redact import redact
from suite.schema import Status
from suite.sqlite_store import (
    alive,
    check_complete,
    creation_lock,
    ensure_sqlite_store,
    file_claim,
    sqlite_file,
)
from suite.weights import load_weights, save_weights

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault(
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
)  # its tqdm bars broke one-line errors
# every request to a tracking server has a deadline: 30 s per try, one retry (MLflow's defaults, 120 s
# and 7 retries with backoff, keep a command waiting on a dead server for many minutes)
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
# MLflow prints "View run … at: URL" with the tracking URI's password in it on every run's end
os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

import mlflow  # noqa: E402
import mlflow.artifacts  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import (  # noqa: E402
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    Metric,
    Param,
    RunTag,
)

logging.getLogger("mlflow").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.ERROR)


def end_active_run(status: str = Status.KILLED) -> None:
    """End MLflow's active run, if one is still open, with `status` (after an interruption: its exit
    hook would otherwise end it FINISHED)."""
    if mlflow.active_run() is not None:
        mlflow.end_run(status)


@dataclass(frozen=True)
class StoredRun:
    """What the suite reads of one run: plain values, so no caller handles MLflow's entities."""

    run_id: str
    experiment_id: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, str]
    start_ms: int | None = None  # Unix time in ms the run started,
    end_ms: int | None = None  # and last ended (a reopened run ends again); None while it runs
    dataset_digests: tuple[str, ...] = ()  # digests of the datasets logged as the run's inputs


@dataclass(frozen=True)
class ReusedModel:
    """A finished model read back from the store (on the CPU) with its run's metrics."""

    run_id: str
    model: torch.nn.Module
    metrics: dict[str, float]


class Store:
    """A handle on one MLflow tracking store, created once by the parent process."""

    def __init__(self, uri: str | None = None, *, read_only: bool = False) -> None:
        """Open the store at `uri` (default: `tracking_uri()`). `read_only` (list, report, ui):
        a SQLite file that is not a complete MLflow store (missing, empty, another kind of file,
        half-created) is an error, never initialised. Otherwise a new SQLite store is created
        atomically, and a half-created one that holds no run is set aside and rebuilt."""
        self.uri = uri or tracking_uri()
        self.shown = redact(self.uri)  # what is printed, logged, tagged or rendered
        self.notes: list[str] = []  # what opening the store did that a user should hear of
        db = sqlite_file(self.uri)
        if db is not None and read_only:
            check_complete(db, self.shown, schema_head())
        check_reachable(self.uri)
        mlflow.set_tracking_uri(self.uri)
        self.commit = process_commit()
        if db is not None and not read_only:
            with creation_lock(db):
                self.notes += ensure_sqlite_store(
                    db, self.shown, schema_head(), _create_sqlite_store
                )
        try:
            self.client = MlflowClient(self.uri)
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # any backend failure: the user must fix the URI or server
            raise StoreError(
                f"MLflow store {self.shown} is not usable ({type(exc).__name__}: "
                f"{redact(str(exc).splitlines()[0][:200]) if str(exc) else ''}); "
                "check MLFLOW_TRACKING_URI"
            ) from None

    # ---- experiments and runs -------------------------------------------------------------

    def experiment_id(self, name: str, create: bool = True) -> str:
        """The id of experiment `name`. With `create` (a run), a missing experiment is created with
        artifacts under mlruns/artifacts and a deleted one restored; without it (read-only commands)
        both are errors, so reading never changes the store."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None and exp.lifecycle_stage == "deleted" and not create:
            raise StoreError(
                f"experiment {name!r} in {self.shown} is deleted; restore it with "
                f"`mlflow experiments restore --experiment-id {exp.experiment_id}` to read it"
            )
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            for key, value in EXPERIMENT_KIND.items():
                if exp.tags.get(key) != value:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        if not create:
            raise StoreError(
                f"no experiment named {name!r} in {self.shown}; `suite list` shows them"
            )
        with self.claim(f"experiment/{name}"):  # two runs of a new experiment create it once
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            location = artifact_root() if self.uri.startswith("sqlite:") else None
            return self.client.create_experiment(
                name, artifact_location=location, tags=dict(EXPERIMENT_KIND)
            )

    def show_in_ui(self, experiment_id: str, metrics: list[str]) -> None:
        """Make the runs table of `suite ui` (`ui_url`) show these metric columns beside Dataset and
        Models: MLflow's shared view state, an experiment tag the UI reads for `viewStateShareKey`."""
        columns = [f"attributes.`{name}`" for name in ("Dataset", "Models")]
        columns += [f"metrics.`{key}`" for key in metrics]
        value = json.dumps({"selectedColumns": columns})
        self.client.set_experiment_tag(experiment_id, f"{UI_VIEW_TAG}{UI_VIEW_KEY}", value)

    def base_tags(self) -> dict[str, str]:
        return {
            schema.VERSION: __version__,
            schema.COMMIT: self.commit,
            schema.HOST: socket.gethostname(),
            schema.PID: str(os.getpid()),
        }

    def reap_stale(self, experiment_id: str) -> list[str]:
        """Mark FAILED the RUNNING runs whose process (on this host) is gone, e.g. after `kill -9`."""
        host = socket.gethostname()
        reaped = []
        for run in self.client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
            tags = run.data.tags
            pid = tags.get(schema.PID, "")
            if tags.get(schema.HOST) != host or not pid.isdigit() or alive(int(pid)):
                continue
            self.client.set_tag(run.info.run_id, schema.ERROR, f"process {pid} died while running")
            self.client.set_terminated(run.info.run_id, Status.FAILED)
            reaped.append(run.info.run_id)
        return reaped

    # ---- primitives of the reuse protocol (`suite.cache`) -----------------------------------

    @contextmanager
    def claim(self, key: str, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the claim on `key` (a model's or a result's identity) while the body makes it, so
        a second process on the same store waits instead of making it again (`sqlite_store.file_claim`,
        a lock file under `claims/` beside the database). A tracking server gives no such lock: there the body
        runs unclaimed."""
        db = sqlite_file(self.uri)
        if db is None:
            yield
            return
        with file_claim(db.parent / "claims", key, waiting):
            yield

    def search(self, experiment_id: str, filter_string: str) -> list[StoredRun]:
        """The runs of the experiment matching MLflow's `filter_string`, newest first, that keep
        their artifacts where this experiment puts them (`<home>/<run_id>/artifacts`): a run
        pointing elsewhere was not created by this store for this run and is left out."""
        own = self._artifact_home(experiment_id)
        runs = self.client.search_runs(
            [experiment_id], filter_string, order_by=["attributes.start_time DESC"]
        )
        return [_stored(run) for run in runs if _is_own(run, own)]

    def get(self, run_id: str) -> StoredRun:
        """Run `run_id` as it is now."""
        return _stored(self.client.get_run(run_id))

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        """A new run named `name` with `tags` and this process's own (`base_tags`); its id."""
        all_tags = {**tags, **self.base_tags(), schema.RUN_NAME: name}
        return self.client.create_run(experiment_id, tags=all_tags, run_name=name).info.run_id

    def artifact_names(self, run_id: str, folder: str) -> set[str]:
        """The file names directly under the run's artifact `folder`."""
        return {Path(f.path).name for f in self.client.list_artifacts(run_id, folder)}

    # ---- reading back (reports, listings) -----------------------------------------------------

    def experiments(self) -> list[tuple[str, str]]:
        """(id, name) of every live experiment but MLflow's empty Default."""
        return [
            (e.experiment_id, e.name)
            for e in self.client.search_experiments()
            if e.name != "Default"
        ]

    def latest_experiment(self) -> str:
        """The name of the experiment with the most recently started suite run."""
        runs = self.client.search_runs(
            [e.experiment_id for e in self.client.search_experiments()],
            f"tags.`{schema.CONDITION}` != ''",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise StoreError(
                f"the store {self.shown} holds no suite runs; run `suite run FILE` first"
            )
        return self.client.get_experiment(runs[0].info.experiment_id).name

    def runs(self, experiment_id: str, newest_first: bool = True) -> list[StoredRun]:
        """Every run of the experiment, by start time."""
        order = "DESC" if newest_first else "ASC"
        return [
            _stored(r)
            for r in self.client.search_runs(
                [experiment_id], order_by=[f"attributes.start_time {order}"]
            )
        ]

    def metric_history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        """(step, value) of every logged value of `metric` (per-epoch curves)."""
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, metric)]

    def load_json(self, run_id: str, relpath: str) -> object:
        return self._read(run_id, relpath, lambda p: json.loads(p.read_text(encoding="utf-8")))

    def load_npy(self, run_id: str, relpath: str) -> np.ndarray:
        """A `.npy` artifact; object arrays are refused (unpickling runs code)."""
        return self._read(run_id, relpath, lambda p: np.load(p, allow_pickle=False))

    def _read(self, run_id: str, relpath: str, parse: Callable[[Path], Any]) -> Any:
        """`parse(path)` of artifact `relpath` of run `run_id`, read only as a regular file inside
        the run's artifact folder (`_fetched`); a missing, linked or unparsable artifact is a
        StoreError naming the run and the file, never a traceback."""
        artifact_uri, where = self.client.get_run(run_id).info.artifact_uri, f"run {run_id}"
        with self._fetched(artifact_uri, relpath, where) as path:
            try:
                return parse(path)
            except Exception as exc:  # untrusted bytes: any parser failure is the file's fault
                reason = str(exc).splitlines()[0][:160] if str(exc) else ""
                raise StoreError(
                    f"{where}: artifact {relpath} is unreadable ({type(exc).__name__}"
                    f"{': ' + reason if reason else ''}); rerun with --force to redo it"
                ) from None

    @contextmanager
    def _fetched(self, artifact_uri: str, relpath: str, where: str) -> Iterator[Path]:
        """A local regular file holding artifact `relpath` of the folder `artifact_uri`: read in
        place on a local store (`artifacts.regular_file`: no link followed), else downloaded from
        the server into a temporary folder and checked there."""
        parts = urllib.parse.urlsplit(artifact_uri)
        if parts.scheme == "file":
            yield regular_file(Path(urllib.parse.unquote(parts.path)), relpath, where)
            return
        with tempfile.TemporaryDirectory() as tmp:
            try:
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{artifact_uri.rstrip('/')}/{relpath}",
                    dst_path=tmp,
                    tracking_uri=self.uri,
                )
            except Exception as exc:  # the server lost it, or refuses it
                raise StoreError(
                    f"{where}: artifact {relpath} cannot be fetched ({type(exc).__name__}); "
                    "rerun with --force to redo it"
                ) from None
            yield regular_file(Path(tmp), PurePosixPath(relpath).name, where)

    def _artifact_home(self, experiment_id: str) -> str:
        return self.client.get_experiment(experiment_id).artifact_location.rstrip("/")

    def create_child(
        self, experiment_id: str, parent_id: str, name: str, tags: dict[str, str], params: dict
    ) -> str:
        """A new child run under `parent_id` with its tags and flattened params."""
        run_id = self.create_run(experiment_id, name, {**tags, schema.PARENT_RUN_ID: parent_id})
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])
        return run_id

    @contextmanager
    def active(self, run_id: str, interrupted: str = Status.KILLED) -> Iterator[str]:
        """Make `run_id` the active (RUNNING) run; end it FINISHED, `interrupted` on Ctrl-C (a
        finished run reopened to add results passes FINISHED: what it held still stands), FAILED
        on error."""
        try:
            mlflow.start_run(run_id=run_id)
            self._claim(run_id)
            yield run_id
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM, even while the run was being opened
            self._end(run_id, interrupted)
            raise
        except BaseException as exc:
            self.client.set_tag(run_id, schema.ERROR, redact(f"{type(exc).__name__}: {exc}")[:4000])
            self._end(run_id, Status.FAILED)
            raise
        mlflow.end_run(Status.FINISHED)

    def _end(self, run_id: str, status: str) -> None:
        """End `run_id` with `status`: as MLflow's active run where it is one (else MLflow's exit
        hook would end it FINISHED), else through the client."""
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status)
        else:
            self.client.set_terminated(run_id, status)

    @contextmanager
    def scope(self, run_ids: list[str]) -> Iterator[dict[str, str]]:
        """Hold background runs (conditions' parent runs) RUNNING while the body works; then end
        each with the status the body put in the yielded dict (default FINISHED), or all KILLED on
        Ctrl-C, FAILED on an exception."""
        for run_id in run_ids:
            self.client.update_run(run_id, status=Status.RUNNING)
            self._claim(run_id)
        outcome: dict[str, str] = {}
        try:
            yield outcome
        except KeyboardInterrupt:
            self._end_all(run_ids, Status.KILLED)
            raise
        except BaseException as exc:
            for run_id in run_ids:
                self.client.set_tag(
                    run_id, schema.ERROR, redact(f"{type(exc).__name__}: {exc}")[:4000]
                )
            self._end_all(run_ids, Status.FAILED)
            raise
        for run_id in run_ids:
            self.client.set_terminated(run_id, outcome.get(run_id, Status.FINISHED))

    def _end_all(self, run_ids: list[str], status: str) -> None:
        for run_id in run_ids:
            self.client.set_terminated(run_id, status)

    def _claim(self, run_id: str) -> None:
        """Record which process holds the run, so a later run can tell a dead holder (reap_stale)."""
        self.set_tags(run_id, {schema.PID: str(os.getpid()), schema.HOST: socket.gethostname()})

    # ---- logging -----------------------------------------------------------------------------

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Log many metrics in one call (one SQLite round trip instead of one per metric)."""
        now = _now_ms()
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_model(self, run_id: str, model: torch.nn.Module, arch: str, dropout: float) -> str:
        """Log `model` as weights only (a `state_dict` file, no pickled code) in an MLflow
        LoggedModel whose params name the architecture; the run lists it as its output model.
        Returns the model id, also kept in the run's schema.MODEL_ID."""
        experiment_id = self.client.get_run(run_id).info.experiment_id
        logged = self.client.create_logged_model(
            experiment_id,
            name="model",
            source_run_id=run_id,
            params={"arch": arch, "dropout": repr(float(dropout))},
            model_type="pytorch-state-dict",
        )
        with tempfile.TemporaryDirectory() as tmp:
            save_weights(model, Path(tmp) / schema.WEIGHTS)
            self.client.log_model_artifacts(logged.model_id, tmp)
        self.client.finalize_logged_model(logged.model_id, "READY")
        self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, 0)])
        self.client.set_tag(run_id, schema.MODEL_ID, logged.model_id)
        return logged.model_id

    def load_model(self, run_id: str) -> torch.nn.Module:
        """The model of run `run_id`, rebuilt with `build_model` and filled with its logged weights
        (read with `weights_only=True`: nothing in the store can run code here), in eval mode on the
        CPU. Raises StoreError naming the run when the logged model is not its own plain weights."""
        return self.load_model_of(self.get(run_id))

    def load_model_of(self, run: StoredRun) -> torch.nn.Module:
        """`load_model` of a run already read (its tags name the model)."""
        run_id, model_id = run.run_id, run.tags.get(schema.MODEL_ID, "")
        where = f"run {run_id} in {self.shown}"
        try:
            logged = self.client.get_logged_model(model_id)
        except Exception:  # a missing or malformed id: the run was not logged by the suite
            raise StoreError(
                f"{where}: its model {model_id!r} does not exist; rerun with --force"
            ) from None
        own = f"{self._artifact_home(run.experiment_id)}/models/{model_id}/artifacts"
        if logged.source_run_id != run_id or logged.artifact_location.rstrip("/") != own:
            raise StoreError(f"{where}: its model {model_id} belongs elsewhere; rerun with --force")
        arch, dropout = logged.params.get("arch"), logged.params.get("dropout", "")
        with self._fetched(logged.artifact_location, schema.WEIGHTS, where) as path:
            return load_weights(path, arch, dropout, where)

    def log_dataset(self, run_id: str, data: DataSplits) -> None:
        """Record the run's data as an MLflow dataset input (name, digest, split sizes), so the
        runs table's Dataset column shows what each model was trained and tested on."""
        sizes = {"train": len(data.train.y), "val": len(data.val.y), "test": len(data.test.y)}
        dataset = Dataset(
            name=data.dataset,
            digest=data.digest,
            source_type="local",
            source=json.dumps({"uri": data.source}),
            profile=json.dumps(sizes),
        )
        context = InputTag("mlflow.data.context", "training")
        self.client.log_inputs(run_id, [DatasetInput(dataset, [context])])

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
        return self._read(run_id, relpath, pd.read_parquet)

    def log_arrays(self, run_id: str, relpath: str, arrays: dict[str, np.ndarray]) -> None:
        """Arrays as one compressed `.npz` artifact (np.savez_compressed: exact values)."""
        self.log_artifact_bytes(run_id, relpath, lambda p: np.savez_compressed(p, **arrays))

    def load_arrays(self, run_id: str, relpath: str) -> dict[str, np.ndarray]:
        """The arrays of a `.npz` artifact; object arrays are refused (unpickling runs code)."""

        def parse(path: Path) -> dict[str, np.ndarray]:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}

        return self._read(run_id, relpath, parse)

    def log_report(self, experiment_id: str, folder: Path, files: list[str]) -> str:
        """A `report` run in the experiment holding the rendered files (`files`, relative to
        `folder`; never anything else a user keeps there) as artifacts."""
        name = schema.LEVEL_REPORT
        tags = {schema.LEVEL: schema.LEVEL_REPORT, **self.base_tags(), schema.RUN_NAME: name}
        run_id = self.client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
        for rel in files:
            parent = Path(schema.REPORT_FOLDER, rel).parent.as_posix()
            self.client.log_artifact(run_id, str(folder / rel), parent)
        self.client.set_terminated(run_id, Status.FINISHED)
        return run_id

    def log_text(self, run_id: str, relpath: str, text: str) -> None:
        self.log_artifact_bytes(run_id, relpath, lambda p: p.write_text(text, encoding="utf-8"))


def _stored(run) -> StoredRun:
    return StoredRun(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        tags=dict(run.data.tags),
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        start_ms=run.info.start_time,
        end_ms=run.info.end_time,
        dataset_digests=tuple(
            d.dataset.digest for d in (run.inputs.dataset_inputs if run.inputs else [])
        ),
    )


def _is_own(run, artifact_home: str) -> bool:
    """Whether `run` keeps its artifacts where its experiment puts them: `<home>/<run_id>/artifacts`.
    A run whose artifact location points elsewhere was not created by this store for this run."""
    return run.info.artifact_uri.rstrip("/") == f"{artifact_home}/{run.info.run_id}/artifacts"


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def schema_head() -> str:
    """The schema revision this MLflow creates and expects."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _create_sqlite_store(db: Path) -> None:
    """Create MLflow's tables in a temporary file beside `db`, then rename it to `db` (atomic on one
    file system). Leftovers of creators that died are removed first."""
    for leftover in db.parent.glob(f".{db.name}.creating-*"):
        pid = leftover.name.removeprefix(f".{db.name}.creating-").split("-")[0]
        if not pid.isdigit() or not alive(int(pid)):
            leftover.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.creating-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        client = MlflowClient(f"sqlite:///{tmp}")
        client.search_experiments(max_results=1)  # runs MLflow's migrations on the new file
        sql_store = getattr(getattr(client, "_tracking_client", None), "store", None)
        if hasattr(sql_store, "engine"):  # close its connections to the file before the rename
            sql_store.engine.dispose()
        os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def _now_ms() -> int:
    return int(time.time() * 1000)
