"""Opening the MLflow store (a local SQLite file is created atomically, a server must answer) and
the runs in it: experiments, search, creation, metrics, tags, datasets and reports."""

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    Metric,
    Param,
    RunTag,
)

from suite import __version__, schema
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
from suite.tracking.files import ArtifactFiles
from suite.tracking.lifecycle import RunLifecycle
from suite.tracking.runs import StoredRun, _stored


def end_active_run(status: str = Status.KILLED) -> None:
    """End MLflow's active run, if one is still open, with `status` (after an interruption: its exit
    hook would otherwise end it FINISHED)."""
    if mlflow.active_run() is not None:
        mlflow.end_run(status)


class Store(RunLifecycle, ArtifactFiles):
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
            location = artifact_root(self.uri) if self.uri.startswith("sqlite:") else None
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

    @contextmanager
    def claim(
        self, key: str, waiting: Callable[[str], None] | None = None, *, block: bool = True
    ) -> Iterator[bool]:
        """Hold the claim on `key` (a model's or a result's identity) while the body makes it, so
        a second process on the same store waits instead of making it again (`sqlite_store.file_claim`,
        a lock file under `claims/` beside the database); with `block` false the body is told
        (False) that another process holds it instead. A tracking server gives no such lock: there
        the body runs unclaimed (True)."""
        db = sqlite_file(self.uri)
        if db is None:
            yield True
            return
        with file_claim(db.parent / "claims", key, waiting, block=block) as mine:
            yield mine

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

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Log many metrics in one call (one SQLite round trip instead of one per metric)."""
        now = _now_ms()
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

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
