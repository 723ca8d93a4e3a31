"""Manifest schema: every malformed manifest gives its one-line error, exit 2, and writes nothing."""

import os
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suite.cli import app
from suite.errors import ManifestError
from suite.identity import config_hash
from suite.manifest import baselines, load_manifest

VALID = """
[experiment]
name = "t"
seeds = [0]

[data]
dataset = "mnist-5k"

[model]
arch = "tiny"

[train]
epochs = 1

[[conditions]]
name = "base"
kind = "standard"

[[conditions]]
name = "t100"
kind = "defensive"
temperature = 100

[[attacks]]
name = "cw"
kind = "cw-l2"
[attacks.params]
max_iterations = 10
"""


def write(tmp_path: Path, text: str, name: str = "m.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_manifest_loads_with_defaults(tmp_path):
    m = load_manifest(write(tmp_path, VALID))
    assert m.experiment.device == "auto"
    assert m.train.optimizer == "sgd" and m.train.epochs == 1
    assert [c.kind for c in m.conditions] == ["standard", "defensive"]
    assert m.attacks[0].params.max_iterations == 10


# (what to change in VALID, the exact line expected after "FILE: ")
MALFORMED = [
    ("temperature = 100", "temperature = -5", "conditions[1].temperature: must be > 0 (got -5)"),
    ("seeds = [0]", "seeds = []", "experiment.seeds: must have at least 1 item(s) (got [])"),
    ("seeds = [0]", "seeds = [1, 1]", "experiment.seeds: must be unique (got [1, 1])"),
    (
        'dataset = "mnist-5k"',
        'dataset = "cifar"',
        "data.dataset: must be one of 'mnist-5k', 'mnist' or 'fashion-mnist' (got 'cifar')",
    ),
    ("epochs = 1", 'epochs = "two"', "train.epochs: must be an integer (got 'two')"),
    (
        "epochs = 1",
        "epochs = 1\nlearning_rate = 0.1",
        "train.learning_rate: unknown key; allowed keys: ",
    ),
    (
        'name = "t100"',
        'name = "base"',
        "conditions[1].name: duplicate name, already used by conditions[0]",
    ),
    (
        'kind = "defensive"',
        'kind = "magic"',
        "conditions[1].kind: must be one of 'standard', 'defensive', 'synthetic', 'adversarial', "
        "'ard', 'matched' (got 'magic')",
    ),
    ('arch = "tiny"', 'arch = "resnet"', "model.arch: must be one of"),
    ('name = "t"\n', 'name = ""\n', "experiment.name: must not be empty"),
    (
        "[attacks.params]\nmax_iterations = 10",
        "[attacks.params]\nmax_iterations = 0",
        "attacks[0].params.max_iterations: must be >= 1 (got 0)",
    ),
    (
        "[attacks.params]\nmax_iterations = 10",
        "[attacks.params]\nmax_iter = 10",
        "attacks[0].params.max_iter: unknown key",
    ),
    ('kind = "cw-l2"', 'kind = "deepfool"', "attacks[0].kind: must be one of 'cw-l2'"),
    (
        "[model]",
        "[modle]",
        "modle: unknown key; allowed keys: experiment, data, model, train, conditions, attacks",
    ),
    (
        'dataset = "mnist-5k"',
        'dataset = "mnist-5k"\nval_samples = -1',
        "data.val_samples: must be >= 0 (got -1)",
    ),
    (
        "seeds = [0]",
        'seeds = [0]\ndevice = "tpu"',
        "experiment.device: must be one of 'auto', 'cpu' or 'cuda' (got 'tpu')",
    ),
    (
        "temperature = 100",
        'temperature = 100\nbaseline = "t100"',
        "conditions[1].baseline: must name a standard condition of this manifest (one of ['base'])"
        " (got 't100')",
    ),
    (
        "temperature = 100",
        "temperature = 100\nstudent_epochs = 3",
        "conditions[1].baseline: no standard condition trains tiny for 3 epochs like this one",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), MALFORMED, ids=[m[2][:40] for m in MALFORMED])
def test_malformed_manifest_one_line_exit_2_nothing_written(
    tmp_path, monkeypatch, old, new, expected
):
    assert old in VALID
    path = write(tmp_path, VALID.replace(old, new, 1))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ManifestError) as exc:
        load_manifest(path)
    lines = str(exc.value).splitlines()
    assert any(line.startswith(f"{path}: {expected}") for line in lines), lines
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert not (tmp_path / "mlruns").exists()


def test_validate_reports_every_problem_of_every_file(tmp_path):
    bad = write(
        tmp_path,
        VALID.replace("temperature = 100", "temperature = 0").replace("epochs = 1", "epochs = -1"),
        "bad.toml",
    )
    good = write(tmp_path, VALID, "good.toml")
    result = CliRunner().invoke(app, ["validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert f"{good}: ok" in result.output
    assert f"{bad}: train.epochs: must be > 0 (got -1)" in result.output
    assert f"{bad}: conditions[1].temperature: must be > 0 (got 0)" in result.output


def test_not_toml_and_missing_file(tmp_path):
    path = write(tmp_path, "[experiment\nname=")
    with pytest.raises(ManifestError, match=r"not valid TOML"):
        load_manifest(path)
    with pytest.raises(ManifestError, match=r"no such manifest file"):
        load_manifest(tmp_path / "nope.toml")


def test_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, VALID)
    m = load_manifest(
        path,
        [
            "train.epochs=3",
            "data.dataset=fashion-mnist",
            "conditions.t100.temperature=50",
            "conditions[0].name=undistilled",
            "experiment.seeds=[4, 5]",
        ],
    )
    assert m.train.epochs == 3 and m.data.dataset == "fashion-mnist"
    assert m.conditions[1].temperature == 50 and m.conditions[0].name == "undistilled"
    assert m.experiment.seeds == [4, 5]
    with pytest.raises(ManifestError, match=r"train.epochs: must be > 0 \(got 0\)"):
        load_manifest(path, ["train.epochs=0"])
    with pytest.raises(ManifestError, match=r"no item named 'nope'"):
        load_manifest(path, ["conditions.nope.temperature=5"])
    with pytest.raises(ManifestError, match=r"expected KEY=VALUE"):
        load_manifest(path, ["train.epochs"])


def test_shipped_manifests_validate():
    root = Path(__file__).resolve().parents[1] / "manifests"
    paths = sorted(root.glob("*.toml"))
    assert paths
    for path in paths:
        load_manifest(path)


def test_config_hash_is_stable_and_sensitive(tmp_path):
    a = load_manifest(write(tmp_path, VALID))
    b = load_manifest(write(tmp_path, VALID, "b.toml"), ["train.lr=0.5"])
    assert config_hash(a.train) == config_hash(
        load_manifest(write(tmp_path, VALID, "c.toml")).train
    )
    assert config_hash(a.train) != config_hash(b.train)
    assert os.path.exists(tmp_path / "b.toml")


def test_baseline_defaults_to_the_standard_condition_with_the_same_epochs(tmp_path):
    text = VALID.replace(
        '[[conditions]]\nname = "t100"',
        '[[conditions]]\nname = "base-e3"\nkind = "standard"\nepochs = 3\n\n'
        '[[conditions]]\nname = "t100"',
    )
    path = write(tmp_path, text + '\n[[conditions]]\nname = "t100-e3"\nkind = "defensive"\n'
                 "temperature = 100\nstudent_epochs = 3\n")  # fmt: skip
    m = load_manifest(path)
    found = baselines([c.model_dump(mode="json") for c in m.conditions], m.train.epochs)
    assert found == {"t100": "base", "t100-e3": "base-e3"}
    explicit = load_manifest(path, ["conditions.t100-e3.baseline=base"])
    assert (
        baselines([c.model_dump(mode="json") for c in explicit.conditions], 1)["t100-e3"] == "base"
    )
    # the baseline only changes the comparison: the models' config hashes stay the same
    assert config_hash(m.conditions[2]) == config_hash(explicit.conditions[2])


def test_default_baseline_matches_the_architecture_as_well_as_the_epochs():
    """A ConvNet trained on a synthetic set is compared with the undistilled ConvNet, not with
    the undistilled cw-mnist that comes first in the manifest."""
    conditions = [
        {"name": "undistilled", "kind": "standard"},
        {"name": "undistilled-convnet", "kind": "standard", "arch": "convnet"},
        {"name": "dm-convnet", "kind": "synthetic", "arch": "convnet"},
        {"name": "dm", "kind": "synthetic"},
    ]
    assert baselines(conditions, 10, "cw-mnist") == {
        "dm-convnet": "undistilled-convnet",
        "dm": "undistilled",
    }


def test_the_primary_endpoint_is_an_attack_or_a_best_of_and_the_margin_a_ratio_below_one(tmp_path):
    path = write(tmp_path, VALID)
    names = [a.name for a in load_manifest(path).attacks]
    assert load_manifest(path, [f"experiment.primary={names[0]}"]).experiment.primary == names[0]
    assert load_manifest(path, ["experiment.primary=best-l2"]).experiment.primary == "best-l2"
    with pytest.raises(ManifestError, match=r"experiment.primary: names no attack.*\(got 'nope'\)"):
        load_manifest(path, ["experiment.primary=nope"])
    with pytest.raises(ManifestError, match=r"experiment.equivalence_margin: must be < 1"):
        load_manifest(path, ["experiment.equivalence_margin=1.1"])
    # report-only settings: the hashes that key stored models and attacks do not change
    plain, declared = load_manifest(path), load_manifest(path, ["experiment.primary=best-l2"])
    assert config_hash(plain.conditions[0], plain.attacks[0]) == config_hash(
        declared.conditions[0], declared.attacks[0]
    )
