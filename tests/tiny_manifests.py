"""The tests' one builder of tiny manifests (the `tiny` net, a few hundred mnist-5k digits, C&W L2 on
a dozen), as a dict for `validate_manifest` or as TOML text for the CLI."""

import json
from typing import Any

TINY_CW = {
    "name": "cw",
    "kind": "cw-l2",
    "params": {"binary_steps": 3, "max_iterations": 30, "initial_const": 0.1},
}


def tiny_manifest(
    name: str,
    *,
    seeds: list[int] | None = None,
    data: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    attacks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A manifest that trains in seconds; each argument overrides (data, train: updates) its part."""
    return {
        "experiment": {"name": name, "seeds": seeds or [0], "device": "cpu"},
        "data": {
            "dataset": "mnist-5k",
            "train_samples": 600,
            "val_samples": 200,
            "attack_samples": 12,
            **(data or {}),
        },
        "model": {"arch": "tiny"},
        "train": {
            "epochs": 2,
            "batch_size": 64,
            "optimizer": "adam",
            "lr": 0.003,
            "dropout": 0.0,
            **(train or {}),
        },
        "conditions": conditions or [{"name": "base", "kind": "standard"}],
        "attacks": [TINY_CW] if attacks is None else attacks,
    }


def to_toml(raw: dict[str, Any]) -> str:
    """TOML text of a manifest dict: tables, arrays of tables and their sub-tables, plain values."""
    lines: list[str] = []

    def table(path: str, values: dict[str, Any], array: bool) -> None:
        lines.append(f"\n[[{path}]]" if array else f"\n[{path}]")
        nested = {k: v for k, v in values.items() if isinstance(v, dict) or _tables(v)}
        lines.extend(f"{k} = {_value(v)}" for k, v in values.items() if k not in nested)
        for key, value in nested.items():
            emit(f"{path}.{key}", value)

    def emit(path: str, value: Any) -> None:
        if isinstance(value, dict):
            table(path, value, array=False)
        else:
            for item in value:
                table(path, item, array=True)

    for key, value in raw.items():
        emit(key, value)
    return "\n".join(lines).lstrip() + "\n"


def _tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def store_manifest(name: str) -> str:
    """TOML of the smallest manifest a store test needs: the tiny net for one epoch on 400 digits,
    C&W L2 on four."""
    return to_toml(
        tiny_manifest(
            name,
            data={"train_samples": 400, "val_samples": 100, "attack_samples": 4},
            train={"epochs": 1},
            attacks=[
                {"name": "cw", "kind": "cw-l2", "params": {"binary_steps": 2, "max_iterations": 10}}
            ],
        )
    )


def trained_store(root, toml: str):
    """`root` (a new folder) holding `m.toml` and the default store after `suite run m.toml`."""
    import pytest
    from typer.testing import CliRunner

    from suite.cli import app

    (root / "m.toml").write_text(toml)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = CliRunner().invoke(app, ["run", "m.toml"])
    assert result.exit_code == 0, result.output
    return root


def lines(output: str) -> list[str]:
    """The non-blank lines of a command's output."""
    return [line for line in output.splitlines() if line.strip()]


def words(output: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(output.split())
