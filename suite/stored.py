"""What the store already holds of a manifest's jobs, found without training or attacking: the
models a run would reuse (their keys, `conditions.model_keys`, looked up as `cache` would) and
the attack results it would read back. `suite run --dry-run` predicts only the rest (issue 27).
"""

import math
from dataclasses import replace

import numpy as np

from suite import schema
from suite.cache import find_model_run
from suite.conditions import dependency_of, model_keys
from suite.cost import JobEstimate, Work
from suite.identity import ModelKey, config_hash
from suite.job import Dependency
from suite.manifest import AttackSpec, Condition, Manifest
from suite.tracking import Store, StoredRun
from suite.verifying import verify_identity


def stored_models(
    store: Store, experiment_id: str, manifest: Manifest, cond: Condition, seed: int, digest: str
) -> list[tuple[ModelKey, StoredRun | None]]:
    """Each model of `cond`'s job for `seed` with the stored run a run would reuse (None: it
    would train it); empty where the condition is made from another's model not yet stored."""
    dependency = None
    name = dependency_of(cond)
    if name is not None:
        source = next(c for c in manifest.conditions if c.name == name)
        found = stored_models(store, experiment_id, manifest, source, seed, digest)
        run = found[-1][1] if found else None
        if run is None:
            return []
        dependency = Dependency(run.run_id, run.metrics.get(schema.FINAL_VAL_ACC, math.nan))
    return [
        (key, find_model_run(store, experiment_id, cond.name, key.hash, digest))
        for key in model_keys(manifest, cond, seed, dependency)
    ]


def attack_identity(
    manifest: Manifest, spec: AttackSpec, subset: np.ndarray
) -> tuple[np.ndarray, str]:
    """The digits a direct attack `spec` runs on (a prefix of `subset`) and the config hash its
    stored result carries, as `attacking` computes them."""
    idx = subset[: spec.samples or manifest.data.attack_samples]
    return idx, config_hash(spec, idx.tolist(), manifest.experiment.attack_seed)


def mark_stored(
    job: JobEstimate, store: Store, experiment_id: str, manifest: Manifest, subset: np.ndarray,
    digest: str,
) -> JobEstimate:  # fmt: skip
    """`job` with its `stored` flags: a training part where its model is stored, an attack (or
    verification) part where the attacked model holds that result with today's config hash (a
    transfer attack's hash depends on the source's stored images: any stored result of it
    counts)."""
    cond = next(c for c in manifest.conditions if c.name == job.condition)
    models = stored_models(store, experiment_id, manifest, cond, job.seed, digest)
    by_role = {key.role: run for key, run in models}
    attacked = models[-1][1] if models else None
    specs = {a.name: a for a in manifest.attacks}
    verifications = {v.name: v for v in manifest.verify}

    def stored(work: Work) -> bool:
        run = attacked if work.role is None else by_role.get(work.role)
        if run is None:
            return False
        if work.verify is not None:
            spec = verifications[work.verify]
            tag = run.tags.get(schema.result_tag(schema.verify_result(spec.name)))
            return tag == verify_identity(manifest, spec, subset)[1]
        if work.attack is None:
            return True
        spec = specs[work.attack]
        tag = run.tags.get(schema.result_tag(schema.attack_result(spec.name)))
        if spec.source is not None and spec.source != job.condition:
            return tag is not None
        return tag == attack_identity(manifest, spec, subset)[1]

    return replace(job, stored=tuple(stored(w) for w in job.parts))
