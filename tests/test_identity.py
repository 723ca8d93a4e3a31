"""A result's identity: every manifest's config hashes are pinned (stored results of the published
studies stay reusable through any refactor), and each settings model's back-compatibility works
where it is declared, nested at any depth."""

import json
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from suite.identity import ModelKey, config_hash, hashable
from suite.job import Context
from suite.manifest import load_manifest

ROOT = Path(__file__).resolve().parent.parent
PINNED = Path(__file__).with_name("pinned") / "identity_hashes.json"


def manifest_hashes(path: Path) -> dict[str, str]:
    """The hashes of the parts of `path` that the runner hashes: its data split, model, training
    settings, every condition (and its method's params), attack and verification."""
    m = load_manifest(path)
    found = {
        "data": config_hash(Context.data_config_of(m)),
        "model": config_hash(m.model),
        "train": config_hash(m.train),
    }
    for c in m.conditions:
        found[f"condition:{c.name}"] = config_hash(c)
        if getattr(c, "params", None) is not None:
            found[f"condition:{c.name}.params"] = config_hash(c.params)
    for a in m.attacks:
        found[f"attack:{a.name}"] = config_hash(a)
    for v in m.verify:
        found[f"verify:{v.name}"] = config_hash(v)
    return found


def test_every_manifest_keeps_its_config_hashes():
    """Regenerate the pinned file only for a change meant to retire stored results, and say so."""
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    manifests = sorted((ROOT / "manifests").glob("*.toml"))
    assert {p.name for p in manifests} >= set(pinned), "a pinned manifest was removed"
    for path in manifests:
        if path.name in pinned:
            assert manifest_hashes(path) == pinned[path.name], path.name


class Inner(BaseModel):
    UNHASHED_AT: ClassVar[dict[str, object]] = {"added": 0}
    HASHED_AS_REMOVED: ClassVar[dict[str, object]] = {"gone": False}

    kept: int = 1
    added: int = 0


class Outer(BaseModel):
    inner: Inner = Inner()
    many: list[Inner] = [Inner(), Inner(added=3)]
    added: int = 0  # the same name, not declared here: hashed as any setting
    baseline: str | None = None  # report-only at the top level


def test_each_model_declares_its_own_back_compatibility_at_any_depth():
    dumped = hashable(Outer(baseline="x"))
    before = {"kept": 1, "gone": False}
    assert dumped == {"inner": before, "many": [before, {**before, "added": 3}], "added": 0}
    assert config_hash(Inner()) == config_hash({"kept": 1, "gone": False})
    assert config_hash(Inner(added=1)) != config_hash(Inner())
    assert config_hash(Outer(added=1)) != config_hash(Outer())


def test_a_model_key_gives_its_hash_params_and_tags_from_one_source():
    key = ModelKey("t100", "defensive", "teacher", 2, ("teacher", {"epochs": 10}), {"T": 100})
    assert key.hash == config_hash("teacher", {"epochs": 10})
    assert key.mlflow_params({"train.lr": 0.1}) == {"train.lr": 0.1, "seed": 2, "T": 100}
    tags = key.tags("d1")
    assert tags["config_hash"] == key.hash and tags["seed"] == "2" and tags["data_digest"] == "d1"
    assert (key.label, key.run_name) == ("t100 seed 2 (teacher)", "t100/seed=2/teacher")


def _fields_set(model: BaseModel, path: str = "manifest") -> dict[str, set[str]]:
    """Which fields were set, for `model` and every settings model nested in it."""
    found = {path: set(model.model_fields_set)}
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                found |= _fields_set(item, f"{path}.{name}[{i}]")
    return found


def test_a_job_gives_its_worker_the_manifest_it_was_made_from():
    """Issue 29: the worker validates the job's plain-data manifest again and gets the same model,
    down to which fields each settings model set (a full dump would mark every default as set)."""
    from suite.runner import Job, job_manifest, worker_manifest

    for path in sorted((ROOT / "manifests").glob("*.toml")):
        m = load_manifest(path)
        job = Job(manifest=job_manifest(m), condition=m.conditions[0].name, kind="", seed=0)
        again = worker_manifest(job)
        assert again == m, path.name
        assert _fields_set(again) == _fields_set(m), path.name
        assert json.loads(json.dumps(job.manifest)) == job.manifest  # plain data for any executor
