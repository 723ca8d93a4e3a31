"""Run a manifest: every condition × seed is one job (train or reuse, then attack); returns rows.

`run_job` is the one job function every executor calls unchanged: it needs only the resolved
manifest, the tracking URI and the ids the parent process created (experiment, parent run), so it
runs the same in this process, in a Ray worker, or on another machine logging to a shared server.
"""

import functools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from suite import schema
from suite.attacking import attack_model, attack_subset
from suite.attacks import MINIMAL_NORMS
from suite.cache import parent_run
from suite.conditions import run_condition
from suite.data import DataSplits, load_splits
from suite.devices import resolve_device
from suite.errors import ManifestError, StoreError, SuiteError
from suite.identity import config_hash
from suite.job import Context, ModelRun
from suite.manifest import Manifest
from suite.progress import NullProgress, Progress
from suite.report.formatting import duration
from suite.schema import Status
from suite.tracking import Store
from suite.verifying import verify_model

if TYPE_CHECKING:
    from suite.cost import JobEstimate


@dataclass
class Row:
    """One line of the run summary: a model (or a failed condition/seed)."""

    condition: str
    kind: str
    seed: int
    role: str
    status: str
    val_acc: float = math.nan
    test_acc: float = math.nan
    seconds: float = math.nan
    reused: bool = False
    run_id: str = ""
    error: str = ""
    attacks: dict[str, dict[str, float]] = field(default_factory=dict)
    masking: dict[str, float] = field(default_factory=dict)
    verified: dict[str, dict[str, float]] = field(default_factory=dict)  # verification → summary


@dataclass(frozen=True)
class Job:
    """One condition × seed of a resolved manifest: everything a worker needs, as plain data
    (`job_manifest`: only the settings the manifest set, so the worker's validation gives back the
    same model, defaults and which fields were set alike)."""

    manifest: dict
    condition: str
    kind: str
    seed: int
    force: bool = False
    earlier: int = 0  # jobs of the run that an earlier phase ran (transfer sources run first)
    run_total: int = 1  # jobs in the whole run, all phases


def job_manifest(manifest: Manifest) -> dict:
    """The manifest as a job carries it: JSON-safe, the fields it set only (a full dump would
    mark every default as set once a worker validates it again)."""
    return manifest.model_dump(mode="json", exclude_unset=True)


def worker_manifest(job: Job) -> Manifest:
    """The job's manifest validated again in the worker: the model `job_manifest` was made from."""
    return Manifest.model_validate(job.manifest)


# An executor runs every job and returns each one's rows, in job order.
Executor = Callable[[list[Job], str, str, dict[str, str], Progress], list[list[Row]]]


def run_job(
    job: Job,
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    progress: Progress | None = None,
) -> list[Row]:
    """Train (or reuse) the job's models in child runs of `parent_run_id`, attack them, and
    return their rows; a user-fixable failure (diverged training, ...) becomes a FAILED row."""
    manifest = worker_manifest(job)
    cond = next(c for c in manifest.conditions if c.name == job.condition)
    try:
        data = _splits(manifest)
        store = Store(tracking_uri)
        device = resolve_device(manifest.experiment.device)
        ctx = Context(
            manifest=manifest,
            data=data,
            store=store,
            experiment_id=experiment_id,
            device=device,
            progress=progress or NullProgress(),
            force=job.force,
        )
        subset = attacked_digits(manifest, data)
        runs: list[ModelRun] = run_condition(
            ctx=ctx, cond=cond, seed=job.seed, parent_id=parent_run_id
        )
        rows = []
        for run in runs:
            attacks, masking = attack_model(ctx, run, subset) if run.attack else ({}, {})
            verified = verify_model(ctx, run, subset) if run.attack else {}
            rows.append(
                Row(
                    condition=run.condition,
                    kind=run.kind,
                    seed=job.seed,
                    role=run.role,
                    status=Status.FINISHED,
                    val_acc=run.val_acc,
                    test_acc=run.test_acc,
                    seconds=run.seconds,
                    reused=run.reused,
                    run_id=run.run_id,
                    attacks=attacks,
                    masking=masking,
                    verified=verified,
                )
            )
        return rows
    except SuiteError as exc:
        return [failed_row(job, str(exc))]


def failed_row(job: Job, error: str | BaseException) -> Row:
    """The one summary row of a job that failed as a whole, with the reason why: a user-fixable
    error's own message, or an unexpected exception's type and last line (a worker's crash)."""
    if isinstance(error, BaseException):
        text = str(error).strip()
        error = f"{type(error).__name__}: {text.splitlines()[-1][:500] if text else repr(error)}"
    return Row(
        condition=job.condition,
        kind=job.kind,
        seed=job.seed,
        role="-",
        status=Status.FAILED,
        error=error,
    )


def log_finished(
    progress: Progress, job: Job, rows: list[Row], done: int, pace: float | None = None
) -> None:
    """What every executor writes when a job ends: a FAILED line per failed row, then the job's
    done line (`job_done_line`)."""
    for row in rows:
        if row.status == Status.FAILED:
            progress.log(f"FAILED {row.condition} seed {row.seed}: {row.error}")
    progress.log(job_done_line(job, rows, done, pace))


def local_executor(
    jobs: list[Job], uri: str, experiment_id: str, parents: dict[str, str], progress: Progress
) -> list[list[Row]]:
    """In this process, one job after another (the default). A job another process on the same
    store is running is put off to the end, once, so that processes sharing a study split its
    jobs instead of queueing behind each other (at the end this one waits for it and reuses what
    it made). Each job's line estimates the time left from the mean wall time of the jobs this
    process computed (reused ones take seconds)."""
    store = Store(uri)
    results: list[list[Row]] = [[] for _ in jobs]
    computed: list[float] = []
    queue, put_off, done = deque(range(len(jobs))), set(), 0
    while queue:
        i = queue.popleft()
        job = jobs[i]
        key = job_claim(job, experiment_id, parents[job.condition])
        waiting = functools.partial(_job_waiting, progress, job)
        with store.claim(key, waiting, block=i in put_off) as mine:
            if not mine:
                put_off.add(i)
                queue.append(i)
                continue
            start = time.monotonic()
            rows = run_job(job, uri, experiment_id, parents[job.condition], progress)
        if not all(r.reused for r in rows):
            computed.append(time.monotonic() - start)
        done += 1
        log_finished(progress, job, rows, done, sum(computed) / len(computed) if computed else None)
        results[i] = rows
    return results


def job_claim(job: Job, experiment_id: str, parent_id: str) -> str:
    """The key a process holds while it runs `job` (its condition's parent run names its settings)."""
    return f"job/{experiment_id}/{job.condition}/{job.seed}/{parent_id}"


def _job_waiting(progress: Progress, job: Job, holder: str) -> None:
    progress.log(f"{job.condition} seed {job.seed}: {holder} is running this job; waiting")


def job_done_line(job: Job, rows: list[Row], done: int, pace: float | None = None) -> str:
    """One line per finished job, counted over the whole run (`done` jobs of its phase are done),
    with how many are left and, given `pace` (seconds per computed job so far), about how long
    they take if none of them is reused: what a log of a long run shows."""
    done, total = job.earlier + done, max(job.run_total, job.earlier + done)
    status = "failed" if any(r.status == Status.FAILED for r in rows) else "finished"
    reused = all(r.reused for r in rows if r.status != Status.FAILED) and status == "finished"
    left = total - done
    eta = (
        f" (about {duration(left * pace)} at {duration(pace)} per computed job)"
        if pace is not None and left
        else ""
    )
    return (
        f"{time.strftime('%H:%M:%S')} job {done}/{total} {status}: {job.condition} seed {job.seed}"
        + (" (model reused from the store)" if reused else "")
        + f"; {left} left{eta}"
    )


def selected_jobs(
    manifest: Manifest, only: list[str] | None, seeds: list[int] | None
) -> list[tuple[str, int]]:
    """(condition, seed) of every job `--only` and `--seed` leave, in the order they run; names
    that are not in the manifest are one ManifestError."""
    names = [c.name for c in manifest.conditions]
    unknown = [name for name in only or [] if name not in names]
    if unknown:
        raise ManifestError(
            f"--only {', '.join(unknown)}: no such condition; the manifest has {names}"
        )
    stray = [seed for seed in seeds or [] if seed not in manifest.experiment.seeds]
    if stray:
        raise ManifestError(
            f"--seed {', '.join(map(str, stray))}: not a seed of the manifest "
            f"(experiment.seeds = {manifest.experiment.seeds})"
        )
    return [
        (cond.name, seed)
        for cond in manifest.conditions
        if not only or cond.name in only
        for seed in manifest.seeds_of(cond.name)
        if not seeds or seed in seeds
    ]


def attacked_digits(manifest: Manifest, data: DataSplits) -> np.ndarray:
    """The test-set positions every model of `manifest` is attacked on (`attack_subset`)."""
    return attack_subset(
        len(data.test.x), manifest.attack_subset_size(), manifest.experiment.attack_seed
    )


def estimate_manifest(
    manifest: Manifest,
    *,
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    store: Store | None = None,
) -> list["JobEstimate"]:
    """The jobs `run_manifest` would run and their predicted time (`suite.cost`), from the data
    split's size and rates measured now; with a `store`, the parts it already holds are marked and
    count as no time (`suite.stored`). Nothing is trained or written."""
    from suite.cost import estimate
    from suite.stored import mark_stored

    jobs = selected_jobs(manifest, only, seeds)
    data = _splits(manifest)
    found = estimate(manifest, jobs, len(data.train.y), resolve_device(manifest.experiment.device))
    if store is None:
        return found
    try:
        experiment_id = store.experiment_id(manifest.experiment.name, create=False)
    except StoreError:  # no such experiment yet: nothing is stored
        return found
    subset = attacked_digits(manifest, data)
    return [mark_stored(j, store, experiment_id, manifest, subset, data.digest) for j in found]


def run_manifest(
    manifest: Manifest,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
    force: bool = False,
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    executor: Executor = local_executor,
) -> list[Row]:
    """Run every condition × seed of `manifest` (or only the named conditions and seeds, so that
    two processes can share one study without computing the same job) through `executor`.

    The data are loaded and the store, experiment and parent runs created here, once, before any
    job starts (SQLite table creation races otherwise); parent runs end FAILED if a job failed.
    """
    progress = progress or NullProgress()
    selected = selected_jobs(manifest, only, seeds)
    data = _splits(manifest)  # a data problem is reported before anything is written
    resolve_device(manifest.experiment.device)
    store = store or Store()
    for note in store.notes:
        progress.log(note)
    experiment_id = store.experiment_id(manifest.experiment.name)
    store.reap_stale(experiment_id)
    store.show_in_ui(experiment_id, ui_metrics(manifest))
    ctx_data = Context.data_config_of(manifest)

    resolved = job_manifest(manifest)
    conditions = [c for c in manifest.conditions if not only or c.name in only]
    parents = {}
    for cond in conditions:
        parent_hash = config_hash(ctx_data, manifest.model, manifest.train, cond)
        parents[cond.name] = parent_run(
            store, experiment_id, cond.name, cond.kind, parent_hash, data.digest
        )
        store.log_dataset(parents[cond.name], data)  # the Dataset column of the collapsed row
        store.log_text(parents[cond.name], schema.MANIFEST, manifest.model_dump_json(indent=2))
        store.set_tags(parents[cond.name], {schema.MANIFEST_AT: str(time.time_ns())})
    kinds = {c.name: c.kind for c in conditions}
    jobs = [
        Job(manifest=resolved, condition=name, kind=kinds[name], seed=seed, force=force)
        for name, seed in selected
    ]
    # transfer sources first: their adversarials must be in the store before the others run
    sources = {a.source for a in manifest.attacks if a.source is not None}
    first = [i for i, job in enumerate(jobs) if job.condition in sources]
    phases = [first, [i for i in range(len(jobs)) if i not in first]]
    with store.scope(list(parents.values())) as outcome:
        results: list[list[Row]] = [[] for _ in jobs]
        started = 0
        for phase in (p for p in phases if p):
            batch = [replace(jobs[i], earlier=started, run_total=len(jobs)) for i in phase]
            started += len(batch)
            rows_of = executor(batch, store.uri, experiment_id, parents, progress)
            for i, rows in zip(phase, rows_of, strict=True):
                results[i] = rows
        by_condition: dict[str, list[Row]] = {}
        for job, rows in zip(jobs, results, strict=True):
            by_condition.setdefault(job.condition, []).extend(rows)
            if any(r.status == Status.FAILED for r in rows):
                outcome[parents[job.condition]] = Status.FAILED
        for condition, rows in by_condition.items():
            if not seeds or set(manifest.seeds_of(condition)) <= set(seeds):
                # the collapsed row's mean is over every seed: a --seed run leaves it to a full one
                store.log_metrics(parents[condition], parent_summary(manifest, rows))
    return [row for rows in results for row in rows]


def _primary_median(manifest: Manifest) -> tuple[str, str] | None:
    """(attack name, summary key) of the median distortion the runs table shows: the first
    minimal-norm attack of the manifest, or None without one."""
    primary = next((a for a in manifest.attacks if a.kind in MINIMAL_NORMS), None)
    return None if primary is None else (primary.name, f"median_{MINIMAL_NORMS[primary.kind]}")


def ui_metrics(manifest: Manifest) -> list[str]:
    """The metric columns of the experiment's runs table in the MLflow UI (`Store.show_in_ui`)."""
    median = _primary_median(manifest)
    extra = (
        [] if median is None else [schema.result_metric(schema.attack_result(median[0]), median[1])]
    )
    return [schema.FINAL_TEST_ACC, *extra]


def parent_summary(manifest: Manifest, rows: list[Row]) -> dict[str, float]:
    """What a condition's collapsed row in the MLflow UI shows: the mean over seeds of its attacked
    models' test accuracy and of the first minimal-norm attack's median distortion, under the same
    metric names as the child rows (`ui_metrics`)."""
    attacked = [r for r in rows if r.status == Status.FINISHED and r.role in schema.ATTACKED_ROLES]
    if not attacked:
        return {}
    out = {schema.FINAL_TEST_ACC: sum(r.test_acc for r in attacked) / len(attacked)}
    median = _primary_median(manifest)
    if median is not None:
        name, key = median
        values = [r.attacks.get(name, {}).get(key, math.nan) for r in attacked]
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            out[schema.result_metric(schema.attack_result(name), key)] = sum(finite) / len(finite)
    return out


@functools.lru_cache(maxsize=4)
def _load(dataset: str, root, train_samples, val_samples: int, split_seed: int) -> DataSplits:
    return load_splits(dataset, root, train_samples, val_samples, split_seed)


def _splits(manifest: Manifest) -> DataSplits:
    """The manifest's data split, loaded once per process."""
    d = manifest.data
    return _load(d.dataset, d.root, d.train_samples, d.val_samples, d.split_seed)
