"""Reuse: what the store may hand back instead of a new computation, and the one trust rule that
decides it. A model is reused when its run carries the config hash and the data digest asked
for, its weights are logged, and it is a child of one of this experiment's own parent runs; a
result (an attack's, a verification's, the masking diagnostic's) is read back when its config-hash
tag matches; a concurrent process on the same store waits for the claim instead of computing the
same thing twice. The store (`suite.tracking`) only reads and writes."""

import math
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from suite import schema
from suite.identity import ModelKey
from suite.job import Context, ModelRun
from suite.schema import Status
from suite.tracking import ReusedModel, Store, StoredRun
from suite.weights import NonFiniteModel

# a model run whose model is logged holds a usable model when it FINISHED, and while a process has
# reopened it to attack that model (RUNNING); a FAILED or KILLED one is never reused
MODEL_DONE = (Status.FINISHED, Status.RUNNING)


def run_digest(run: StoredRun) -> str:
    """The data digest a run was made on: its DATA_DIGEST tag; for a run logged before that tag
    existed, the digest of its logged dataset input (the same content hash), if it logged one."""
    if schema.DATA_DIGEST in run.tags:
        return run.tags[schema.DATA_DIGEST]
    return run.dataset_digests[0] if len(run.dataset_digests) == 1 else ""


def newest_trusted(
    store: Store,
    experiment_id: str,
    condition: str,
    filter_string: str,
    accept: Callable[[StoredRun], bool],
    digest: str | None,
) -> StoredRun | None:
    """The newest run matching `filter_string` that `accept`s, made on data with `digest` (unless
    None), that is a child of one of this experiment's own parent runs of `condition` and keeps its
    artifacts where this experiment keeps them (`Store.search`); else None. The one trust rule for
    everything read back for reuse: a planted run, a run under a made-up parent, a copy pointing at
    other artifacts is never trusted."""
    parents = store.search(
        experiment_id,
        f"tags.`{schema.LEVEL}` = '{schema.LEVEL_CONDITION}' "
        f"and tags.`{schema.CONDITION}` = '{condition}'",
    )
    trusted = {run.run_id for run in parents}
    return next(
        (
            run
            for run in store.search(experiment_id, filter_string)
            if accept(run)
            and run.tags.get(schema.PARENT_RUN_ID) in trusted
            and (digest is None or run_digest(run) == digest)
        ),
        None,
    )


def find_model_run(
    store: Store, experiment_id: str, condition: str, config_hash: str, digest: str | None
) -> StoredRun | None:
    """A reusable model run (`newest_trusted`): tagged with this config hash, made on data with
    this digest (`None`: any data — only to tell why nothing matched), its model logged (tag
    MODEL_ID, set once the weights are stored) and the run FINISHED or RUNNING (another process
    attacking that model). A teacher outlives a change to its student's settings, which gives the
    condition a new parent; an ARD student's teacher is found under the teacher's condition."""
    return newest_trusted(
        store,
        experiment_id,
        condition,
        f"tags.`{schema.CONFIG_HASH}` = '{config_hash}'",
        lambda run: schema.MODEL_ID in run.tags and run.status in MODEL_DONE,
        digest,
    )


def reusable_model(
    store: Store, experiment_id: str, condition: str, config_hash: str, digest: str
) -> ReusedModel | None:
    """The trusted finished model of `condition` with this config hash, trained on data with this
    digest (`find_model_run`), loaded on the CPU, or None when it must be trained."""
    run = find_model_run(store, experiment_id, condition, config_hash, digest)
    if run is None:
        return None
    return ReusedModel(run_id=run.run_id, model=store.load_model_of(run), metrics=run.metrics)


def data_changed(
    store: Store, experiment_id: str, condition: str, config_hash: str, digest: str
) -> str | None:
    """Why no model with this config hash is reusable when one exists but was made on other data:
    "run R was trained on data DIGEST"; else None."""
    run = find_model_run(store, experiment_id, condition, config_hash, None)
    if run is None or run_digest(run) == digest:
        return None
    return f"run {run.run_id} was trained on data {run_digest(run) or 'of unknown digest'}"


def find_attacked_run(
    store: Store,
    experiment_id: str,
    condition: str,
    seed: int,
    result: str,
    config_hash: str,
    digest: str,
) -> StoredRun | None:
    """The newest trusted model under attack of `condition` at `seed` (role model or student)
    holding `result` (e.g. `schema.attack_result(name)`) computed with `config_hash` on data with
    this digest: the source of a transfer attack; else None."""
    return newest_trusted(
        store,
        experiment_id,
        condition,
        f"tags.`{schema.CONDITION}` = '{condition}' and tags.`{schema.SEED}` = '{seed}' "
        f"and tags.`{schema.result_tag(result)}` = '{config_hash}'",
        lambda run: run.tags.get(schema.ROLE) in schema.ATTACKED_ROLES,
        digest,
    )


def find_set_run(
    store: Store, experiment_id: str, conditions: list[str], set_hash: str, digest: str
) -> StoredRun | None:
    """The trusted run of any of `conditions` that stored the synthetic set with this identity
    (tag SET_HASH, set once the set is logged), distilled from data with this digest: the newest
    one that distilled it, else the newest that reused it; or None."""

    def newest(accept: Callable[[StoredRun], bool]) -> StoredRun | None:
        found = [
            newest_trusted(
                store,
                experiment_id,
                condition,
                f"tags.`{schema.SET_HASH}` = '{set_hash}'",
                accept,
                digest,
            )
            for condition in conditions
        ]
        stored = [run for run in found if run is not None]
        return max(stored, key=lambda run: run.start_ms or 0, default=None)

    return newest(lambda run: schema.SET_FROM not in run.tags) or newest(lambda run: True)


def parent_run(
    store: Store, experiment_id: str, condition: str, kind: str, cfg_hash: str, digest: str
) -> str:
    """The condition's parent run: reused when its config hash and data digest match (and it keeps
    its artifacts where this experiment does), else created."""
    tags = {
        schema.LEVEL: schema.LEVEL_CONDITION,
        schema.CONDITION: condition,
        schema.CONFIG_HASH: cfg_hash,
    }
    with store.claim(f"parent/{experiment_id}/{condition}/{cfg_hash}/{digest}"):
        clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        run = next(
            (r for r in store.search(experiment_id, clauses) if run_digest(r) == digest), None
        )
        if run is not None:
            return run.run_id
        extra = {schema.DATA_DIGEST: digest, schema.KIND: kind}
        return store.create_run(experiment_id, condition, {**tags, **extra})


def stored_result(run: StoredRun, result: str, config_hash: str) -> dict[str, float] | None:
    """The metrics of `result` (`attack.NAME`, `masking`) of `run`, keyed without the prefix and in
    MLflow-safe spelling, if they were saved with this config hash; else None."""
    if run.tags.get(schema.result_tag(result)) != config_hash:
        return None
    prefix = f"{result}."
    return {k.removeprefix(prefix): v for k, v in run.metrics.items() if k.startswith(prefix)}


def save_result(
    store: Store, run_id: str, result: str, config_hash: str, metrics: dict[str, float]
) -> dict[str, float]:
    """Log `metrics` as `result.*` and then tag the commit that made them and the config hash that
    makes them reusable (that tag last: a result cut short is never read back). Returns them as
    `stored_result` would."""
    safe = {schema.metric_key(k): v for k, v in metrics.items()}
    store.log_metrics(run_id, {schema.result_metric(result, k): v for k, v in safe.items()})
    store.set_tags(
        run_id,
        {schema.result_commit(result): store.commit, schema.result_tag(result): config_hash},
    )
    return safe


def cached_result(
    ctx: Context, run: ModelRun, result: str, cfg: str, compute: Callable[[], dict[str, float]]
) -> dict[str, float]:
    """Metrics of `result` (`attack.NAME`, `verify.NAME`, `masking`) on `run`: read back when they
    were saved with config hash `cfg` (`stored_result`), else computed inside the re-opened run and
    saved — an interrupted result is redone, a finished one never is, and a concurrent run on the
    same store waits for it (`Store.claim`) instead of computing it again. Keys are the saved
    (MLflow-safe) names either way."""
    store = ctx.store

    def cached() -> dict[str, float] | None:
        return None if ctx.force else stored_result(store.get(run.run_id), result, cfg)

    def waiting(holder: str) -> None:
        ctx.progress.log(
            f"{run.condition} seed {run.seed}: {holder} is computing {result}; waiting"
        )

    with store.claim(f"result/{run.run_id}/{result}/{cfg}", waiting):  # computed once per store
        hit = cached()
        if hit is not None:
            return hit
        with store.active(run.run_id, interrupted=Status.FINISHED):  # the model stays reusable
            return save_result(store, run.run_id, result, cfg, compute())


def save_chunk(
    store: Store, run_id: str, folder: str, start: int, records: pd.DataFrame, images: np.ndarray
) -> None:
    """One finished batch of an attack (its records and adversarial images) under `folder`: the
    records first, so a batch is whole once its images are there."""
    store.log_table(run_id, f"{folder}/{start:07d}.parquet", records)
    store.log_artifact_bytes(run_id, f"{folder}/{start:07d}.npy", lambda p: np.save(p, images))


def load_chunks(
    store: Store, run_id: str, folder: str
) -> dict[int, tuple[pd.DataFrame, np.ndarray]]:
    """The batches under `folder` that were fully saved (records and images), by first row."""
    names = store.artifact_names(run_id, folder)
    chunks = {}
    for name in names:
        stem = name.removesuffix(".parquet")
        if name.endswith(".parquet") and f"{stem}.npy" in names and stem.isdigit():
            records = store.load_table(run_id, f"{folder}/{name}")
            chunks[int(stem)] = (records, store.load_npy(run_id, f"{folder}/{stem}.npy"))
    return chunks


def adopt(store: Store, run_id: str, parent_id: str) -> None:
    """Move a reused model run of the parent's own condition under `parent_id`: a change to the
    condition that trains the same models (attack its teacher, a new accuracy floor) gives it a new
    parent, which the report reads, and its models must be found there. A run of another condition
    (an ARD student's teacher) stays where it is."""
    run, parent = store.get(run_id), store.get(parent_id)
    same = run.tags.get(schema.CONDITION) == parent.tags.get(schema.CONDITION)
    if same and run.tags.get(schema.PARENT_RUN_ID) != parent_id:
        store.set_tags(run_id, {schema.PARENT_RUN_ID: parent_id})


def cached_training(
    ctx: Context,
    parent_id: str,
    key: ModelKey,
    train: Callable[[str], tuple[nn.Module, float, float]],
    *,
    attack: bool,
    tags: dict[str, str] | None = None,
    arch: str | None = None,
    dropout: float | None = None,
) -> ModelRun:
    """The model of `key`: the trusted run with its hash made on this data (`reusable_model`: the
    data's content digest is part of a model's identity), else trained by `train(run_id) -> (model,
    val_acc, test_acc)` in a new child run of `parent_id`, saying so when the stored model was made
    on other data. `train` logs its own curves and returns the model on `ctx.device`; this logs the
    model (`arch`, `dropout`: default `model.arch`, `train.dropout`), the final metrics and the
    timing, and marks the run reusable. `attack`: whether the model is attacked."""
    store, digest = ctx.store, ctx.data.digest

    def reusable() -> ReusedModel | None:
        if ctx.force:
            return None
        try:
            return reusable_model(store, ctx.experiment_id, key.condition, key.hash, digest)
        except NonFiniteModel as exc:  # a diverged or tampered model: train a fresh one
            ctx.progress.log(f"warning: {key.label}: {exc}; retraining")
            return None

    def waiting(holder: str) -> None:
        ctx.progress.log(f"{key.label}: {holder} is training it; waiting to reuse it")

    # claimed, so a concurrent run on this store waits for the model and then reuses it
    with store.claim(f"model/{ctx.experiment_id}/{key.condition}/{key.hash}/{digest}", waiting):
        reused = reusable()
        if reused is None:
            changed = (
                None
                if ctx.force
                else data_changed(store, ctx.experiment_id, key.condition, key.hash, digest)
            )
            if changed:
                ctx.progress.log(
                    f"{key.label}: the data changed (now {digest}; {changed}): retraining"
                )
            run_id, model, final = _train_in_child_run(
                ctx, parent_id, key, train, tags, arch, dropout
            )
    if reused is not None:
        adopt(store, reused.run_id, parent_id)
        run_id, model, final = reused.run_id, ctx.place(reused.model), reused.metrics
    return ModelRun(
        condition=key.condition,
        kind=key.kind,
        role=key.role,
        seed=key.seed,
        attack=attack,
        run_id=run_id,
        model=model,
        reused=reused is not None,
        val_acc=final.get(schema.FINAL_VAL_ACC, math.nan),
        test_acc=final.get(schema.FINAL_TEST_ACC, math.nan),
        seconds=final.get(schema.TRAIN_SECONDS, math.nan),
    )


def _train_in_child_run(
    ctx: Context,
    parent_id: str,
    key: ModelKey,
    train: Callable[[str], tuple[nn.Module, float, float]],
    tags: dict[str, str] | None,
    arch: str | None,
    dropout: float | None,
) -> tuple[str, nn.Module, dict[str, float]]:
    """Train in a new child run and log the model and its final metrics: (run id, model, metrics)."""
    store = ctx.store
    run_tags = {**key.tags(ctx.data.digest), **(tags or {})}
    params = key.mlflow_params(ctx.base_params())
    run_id = store.create_child(ctx.experiment_id, parent_id, key.run_name, run_tags, params)
    store.log_dataset(run_id, ctx.data)
    with store.active(run_id):
        torch.manual_seed(key.seed)
        start = time.perf_counter()
        model, val_acc, test_acc = train(run_id)
        final = {
            schema.FINAL_VAL_ACC: val_acc,
            schema.FINAL_TEST_ACC: test_acc,
            schema.TRAIN_SECONDS: time.perf_counter() - start,
        }
        store.log_metrics(run_id, final)
        store.log_model(
            run_id,
            model,
            arch or ctx.manifest.model.arch,
            ctx.manifest.train.dropout if dropout is None else dropout,
        )
    return run_id, model, final
