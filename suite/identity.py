"""A result's identity: the config hash of the settings that decide it, and the key of a trained
model (condition, kind, role, seed, settings) that yields its hash, its MLflow params and its tags
from one source. Equal settings give an equal hash on every machine, so a stored result is reused
(`suite.cache`) exactly when it is the result asked for.

Back-compatibility is each settings model's own: a setting added after results were stored is left
out of the hash while it holds the value that means "as before" (`UNHASHED_AT`), and a setting
removed from a model is hashed at the value it always had (`HASHED_AS_REMOVED`), so results
stored before either change stay reusable. `tests/test_identity.py` pins every manifest's hashes."""

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from suite import schema

REPORT_ONLY_FIELDS = frozenset({"baseline", "ensemble", "protocol"})  # how results are compared
# and which jobs run (a control's seeds, a verification's conditions): neither changes a result
UNHASHED_FIELDS = REPORT_ONLY_FIELDS | {"seeds", "conditions"}


def config_hash(*parts: Any) -> str:
    """A short stable hash of JSON-able config pieces (settings models, plain values)."""
    blob = json.dumps([hashable(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def hashable(value: Any) -> Any:
    """`value` as it is hashed: a settings model as its JSON dump without its report-only fields
    (top level) and with each nested model's back-compatibility applied; anything else as is."""
    if isinstance(value, BaseModel):
        return _compatible(value, value.model_dump(mode="json", exclude=set(UNHASHED_FIELDS)))
    return copy.deepcopy(value)


def _compatible(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    """`dumped` (the JSON dump of `model`) under `model`'s own back-compatibility, recursively."""
    cls = type(model)
    unhashed: Mapping[str, Any] = getattr(cls, "UNHASHED_AT", {})
    out: dict[str, Any] = {}
    for name, value in dumped.items():
        if name in unhashed and value == unhashed[name] and type(value) is type(unhashed[name]):
            continue
        out[name] = _nested(getattr(model, name, None), value)
    return {**out, **getattr(cls, "HASHED_AS_REMOVED", {})}


def _nested(attribute: Any, dumped: Any) -> Any:
    """A field's dumped value, with back-compatibility applied to the models inside it."""
    if isinstance(attribute, BaseModel) and isinstance(dumped, dict):
        return _compatible(attribute, dumped)
    if isinstance(attribute, list | tuple) and isinstance(dumped, list):
        return [_nested(a, d) for a, d in zip(attribute, dumped, strict=True)]
    return dumped


@dataclass(frozen=True)
class ModelKey:
    """A trained model's identity: `settings` are hashed (`hash`), `params` are what a user reads
    in MLflow beside the manifest's base params and the seed; `tags` find it again."""

    condition: str
    kind: str
    role: str
    seed: int
    settings: tuple[Any, ...]
    params: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def hash(self) -> str:
        return config_hash(*self.settings)

    def mlflow_params(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """The run's params: the manifest's `base` ones, the seed and the key's own."""
        return {**base, "seed": self.seed, **self.params}

    def tags(self, digest: str) -> dict[str, str]:
        """The tags every model run carries (the reuse lookup reads the hash and the digest)."""
        return {
            schema.CONDITION: self.condition,
            schema.KIND: self.kind,
            schema.SEED: str(self.seed),
            schema.ROLE: self.role,
            schema.CONFIG_HASH: self.hash,
            schema.DATA_DIGEST: digest,
        }

    @property
    def label(self) -> str:
        """How a log line names the model: `t100 seed 2 (teacher)`."""
        return f"{self.condition} seed {self.seed}" + (
            "" if self.role == schema.ROLE_MODEL else f" ({self.role})"
        )

    @property
    def run_name(self) -> str:
        """The child run's name: `t100/seed=2/teacher`."""
        return f"{self.condition}/seed={self.seed}" + (
            "" if self.role == schema.ROLE_MODEL else f"/{self.role}"
        )
