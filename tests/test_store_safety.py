"""Issue 31, each defect reproduced as a careful attacker would: a model is never reused after its
data changed, a password in the tracking URI never leaves the process, a crash while a store is
created never breaks it, read-only commands never initialise a file, two runs of one manifest at
once train each job once, and `suite ui` checks host and port before it prints a URL.
(Report folders that keep a user's files, and the `suite ui` URL, are tested in test_security.py
on its trained store; the credentials on a real server in test_scale.py.)"""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import idx_bytes
from tiny_manifests import lines, tiny_manifest, to_toml
from typer.testing import CliRunner

from suite import data, runner
from suite.cli import app
from suite.errors import StoreError
from suite.manifest import validate_manifest
from suite.progress import NullProgress
from suite.redact import redact
from suite.runner import run_manifest
from suite.sqlite_store import inspect_sqlite
from suite.tracking import Store, schema_head

SUITE = str(Path(sys.executable).parent / "suite")
TINY_CW = {"name": "cw", "kind": "cw-l2", "params": {"binary_steps": 2, "max_iterations": 10}}


class Lines(NullProgress):
    """Progress that keeps the lines a run logs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- 1. a result's identity includes its data ------------------------------------------------


def write_mnist(root: Path, train: tuple, test: tuple) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, array in zip(data.IDX_NAMES.values(), (*train, *test), strict=True):
        (raw / name).write_bytes(idx_bytes(array))


def test_a_model_is_retrained_when_the_data_under_its_root_change(tmp_path):
    """Real mnist-5k digits written as IDX files under data.root; the same manifest after the images
    were inverted and the labels shuffled retrains (and says why); the original files reuse the
    first model again."""
    digits = data.load_splits("mnist-5k", None, None, 0, 0)
    as_bytes = lambda split: (split.x[:, 0] * 255).round().to(torch.uint8).numpy()  # noqa: E731
    train = (as_bytes(digits.train)[:900], digits.train.y.numpy()[:900].astype(np.uint8))
    test = (as_bytes(digits.test)[:100], digits.test.y.numpy()[:100].astype(np.uint8))
    root = tmp_path / "data"
    write_mnist(root, train, test)
    raw = tiny_manifest(
        "swap",
        data={"dataset": "mnist", "root": str(root), "train_samples": 600, "val_samples": 200,
              "attack_samples": 4},
        train={"epochs": 1},
        attacks=[TINY_CW],
    )  # fmt: skip
    manifest = validate_manifest(raw, "t")
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")

    def run() -> tuple[runner.Row, list[str]]:
        runner._load.cache_clear()  # a new process reads the files again; so must this one
        progress = Lines()
        (row,) = run_manifest(manifest, store=store, progress=progress)
        assert row.status == "FINISHED", row.error
        return row, progress.lines

    first, _ = run()
    again, _ = run()
    assert again.reused and again.run_id == first.run_id

    rng = np.random.default_rng(0)
    write_mnist(root, (255 - train[0], rng.permutation(train[1])), (255 - test[0], test[1]))
    swapped, lines = run()
    assert not swapped.reused and swapped.run_id != first.run_id
    assert swapped.test_acc != first.test_acc
    changed = [line for line in lines if "the data changed" in line]
    assert len(changed) == 1 and first.run_id in changed[0] and "retraining" in changed[0]

    write_mnist(root, train, test)
    back, _ = run()
    assert back.reused and back.run_id == first.run_id  # the original data's model, reused


# ---- 2. secrets never leave the process ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:s3cret@127.0.0.1:5000/x", "http://alice:***@127.0.0.1:5000/x"),
        ("server https://TOKEN@host/api failed", "server https://***@host/api failed"),
        ("postgresql://u:p%40ss@db:5432/mlflow", "postgresql://u:***@db:5432/mlflow"),
        ("a http://a:b@h and b https://c:d@i", "a http://a:***@h and b https://c:***@i"),
        ("sqlite:////tmp/mlruns/mlflow.db", "sqlite:////tmp/mlruns/mlflow.db"),
        ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
        ("mail alice@example.org", "mail alice@example.org"),
    ],
)
def test_redact_hides_every_uri_password_and_nothing_else(text, shown):
    assert redact(text) == shown


def test_a_password_in_the_tracking_uri_is_redacted_in_every_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text(to_toml(tiny_manifest("pw", attacks=[TINY_CW])))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret@127.0.0.1:{free_port()}")
    for args in (["run", "m.toml"], ["list"], ["report", "pw"], ["ui", "--port", "5999"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "s3cret" not in result.output, args
        assert "alice:***@127.0.0.1" in result.output, (args, result.output)
        assert "Traceback" not in result.output


# ---- 4. a store survives a crash while it is created -----------------------------------------


@pytest.mark.timeout(300)
def test_a_first_run_killed_while_creating_its_store_leaves_no_broken_store(tmp_path):
    """`kill -9` a first `suite run` at three moments of store creation (as its temporary database
    appears, and 0.7 s and 1.5 s into MLflow's migrations): what is left is no store or a complete
    one, never a half-made one; readers say so in one line; the next run works."""
    (tmp_path / "m.toml").write_text(to_toml(tiny_manifest("crash", attacks=[TINY_CW])))
    states = []
    for delay in (0.0, 0.7, 1.5):
        folder = tmp_path / f"kill-{delay}"
        folder.mkdir()
        db = folder / "mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
        proc = subprocess.Popen(
            [SUITE, "run", str(tmp_path / "m.toml")],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 120
        while not any(folder.glob(".mlflow.db.creating-*")):
            assert proc.poll() is None and time.time() < deadline, "store creation never began"
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = inspect_sqlite(db, schema_head()).state
        assert left in ("absent", "complete"), delay
        states.append(left)
        listed = CliRunner().invoke(app, ["list"], env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
        assert "Traceback" not in listed.output
        if left == "absent":  # killed mid-creation: readers say there is no store, in one line
            assert listed.exit_code == 2 and len(lines(listed.output)) == 1, listed.output
            assert "does not exist" in listed.output
        else:  # creation had finished: the store is whole (its experiment may exist already)
            assert listed.exit_code in (0, 2), listed.output
        Store(f"sqlite:///{db}").client.search_runs(["0"])  # what the next run opens: usable
        assert not any(folder.glob(".mlflow.db.creating-*"))  # the dead creator's file is gone
    assert states[0] == "absent"  # at least the first kill came mid-creation
    first = tmp_path / "kill-0.0"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{first / 'mlflow.db'}"}
    rerun = subprocess.run(
        [SUITE, "run", str(tmp_path / "m.toml")], cwd=first, env=env, capture_output=True,
        text=True, timeout=240,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]


def half_created_store(db: Path) -> None:
    """What `kill -9` left with an earlier suite: MLflow's first tables, none of its migrations."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.initial_models import Base

    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)
    engine.dispose()


def test_a_half_created_store_is_refused_by_readers_and_rebuilt_by_a_run(tmp_path, monkeypatch):
    db = tmp_path / "mlflow.db"
    half_created_store(db)
    before = db.read_bytes()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 2 and len(lines(result.output)) == 1, result.output
    assert "half-created" in result.output and "suite run" in result.output
    assert db.read_bytes() == before
    store = Store(f"sqlite:///{db}")
    assert inspect_sqlite(db, schema_head()).state == "complete"
    (aside,) = tmp_path.glob("mlflow.db.broken-*")
    assert aside.read_bytes() == before  # set aside, not deleted
    assert any(aside.name in note for note in store.notes)
    store.experiment_id("works")


def test_a_store_with_runs_and_an_old_schema_is_never_rebuilt(tmp_path):
    db = tmp_path / "mlflow.db"
    store = Store(f"sqlite:///{db}")
    store.client.create_run(store.experiment_id("old"))  # a store with a run,
    with sqlite3.connect(db) as con:  # then an older schema version
        con.execute("update alembic_version set version_num = 'bad000000000'")
    before = db.read_bytes()
    with pytest.raises(StoreError, match="mlflow db upgrade"):
        Store(f"sqlite:///{db}")
    assert db.read_bytes() == before and not list(tmp_path.glob("mlflow.db.broken-*"))


# ---- 5. read-only means read-only ------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [b"", b"not a database, a user's notes\n"], ids=["empty", "text"]
)
@pytest.mark.parametrize("command", [["list"], ["report", "x"], ["ui"]])
def test_read_only_commands_refuse_a_file_that_is_not_a_store(
    tmp_path, monkeypatch, content, command
):
    db = tmp_path / "mlflow.db"
    db.write_bytes(content)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail("ui served a file that is no store"))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2 and len(lines(result.output)) == 1, result.output
    assert str(db) in result.output and "left as it is" in result.output
    assert db.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_a_run_refuses_a_file_that_is_not_a_store(tmp_path, monkeypatch):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"a user's notes\n")
    with pytest.raises(StoreError, match="not an MLflow store; left as it is"):
        Store(f"sqlite:///{db}")
    assert db.read_bytes() == b"a user's notes\n"


# ---- 6. concurrent runs share the work -------------------------------------------------------


@pytest.mark.timeout(600)
def test_two_runs_of_one_manifest_at_once_train_and_attack_each_job_once(tmp_path):
    toml = tmp_path / "m.toml"
    toml.write_text(to_toml(tiny_manifest("both", seeds=[0, 1], attacks=[TINY_CW])))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    procs = [
        subprocess.Popen([SUITE, "run", str(toml)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=500)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outputs]
    store = Store(env["MLFLOW_TRACKING_URI"])
    exp = store.client.get_experiment_by_name("both")
    found = store.client.search_runs([exp.experiment_id])
    parents = [r for r in found if r.data.tags.get("suite.level") == "condition"]
    models = [r for r in found if r.data.tags.get("role") == "model"]
    assert len(parents) == 1
    assert sorted(int(r.data.tags["seed"]) for r in models) == [0, 1]  # each trained once
    assert {r.info.status for r in found} == {"FINISHED"}
    for seed in (0, 1):  # one run made it, the other reused it
        said = [f"seed {seed} (model reused from the store)" in o for o in outputs]
        assert sorted(said) == [False, True], outputs


# ---- 7. `suite ui` checks before it promises -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "70000"], "--port 70000: not a TCP port"),
        (["--port", "0"], "--port 0: not a TCP port"),
        (["--host", "10.255.255.1"], "cannot listen there"),  # not an address of this machine
        (["--host", "bad host!"], "--host 'bad host!'"),
    ],
)
def test_ui_refuses_a_bad_port_or_host_before_printing_a_url(tmp_path, monkeypatch, args, expected):
    db = tmp_path / "mlflow.db"
    Store(f"sqlite:///{db}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail("served"))
    result = CliRunner().invoke(app, ["ui", *args])
    assert result.exit_code == 2 and len(lines(result.output)) == 1, result.output
    assert expected in result.output and "http://" not in result.output


def test_a_report_reads_the_manifest_of_the_latest_run_not_a_dropped_conditions(
    tmp_path, monkeypatch
):
    """A condition dropped from the manifest keeps its parent run and the manifest logged there;
    the report and the published 'incomplete' list follow the manifest of the latest `suite run`,
    even where the dropped condition's parent is the newest run."""
    from suite.report.collect import collect
    from suite.report.publish import incomplete

    base = [{"name": "base", "kind": "standard"}, {"name": "t5", "kind": "defensive",
             "temperature": 5}]  # fmt: skip
    more = [*base, {"name": "t9", "kind": "defensive", "temperature": 9}]
    small = {"train_samples": 300, "val_samples": 100, "attack_samples": 3}
    attacks = [{"name": "cw", "kind": "cw-l2", "params": {"binary_steps": 1, "max_iterations": 5}}]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for kept, only in ((base, []), (more, ["--only", "t9"]), (base, [])):
        raw = tiny_manifest("dropped", data=small, train={"epochs": 1}, conditions=kept,
                            attacks=attacks)  # fmt: skip
        (tmp_path / "m.toml").write_text(to_toml(raw))
        result = CliRunner().invoke(app, ["run", "m.toml", *only])
        assert result.exit_code == 0, result.output
    data = collect(Store(read_only=True), "dropped")
    assert set(data.baselines) == {"t5"}
    assert not any("t9" in line for line in incomplete(data))


def test_seed_filters_split_a_study_between_processes_without_repeating_a_job(
    tmp_path, monkeypatch
):
    """`suite run --seed` computes only the named seeds, so two processes can share a study; a
    seed outside experiment.seeds is one line with exit code 2; a later full run reuses both."""
    from suite import schema

    raw = tiny_manifest(
        "split", seeds=[0, 1], data={"train_samples": 300, "val_samples": 100, "attack_samples": 3},
        train={"epochs": 1}, conditions=[{"name": "base", "kind": "standard"}],
        attacks=[{"name": "cw", "kind": "cw-l2", "params": {"binary_steps": 1, "max_iterations": 5}}],
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "m.toml").write_text(to_toml(raw))
    bad = CliRunner().invoke(app, ["run", "m.toml", "--seed", "7"])
    errors = [line for line in lines(bad.output) if line.startswith("error:")]
    assert bad.exit_code == 2 and len(errors) == 1, bad.output
    assert "--seed 7" in errors[0] and "experiment.seeds = [0, 1]" in errors[0]
    assert not (tmp_path / "mlruns").exists()  # refused before anything was written

    def seeds_run() -> list[str]:
        store = Store(read_only=True)
        experiment = store.client.get_experiment_by_name("split").experiment_id
        runs = store.client.search_runs([experiment], f"tags.`{schema.SEED}` != ''")
        return sorted(r.data.tags[schema.SEED] for r in runs)

    for seed, expected in (("1", ["1"]), ("0", ["0", "1"]), (None, ["0", "1"])):
        result = CliRunner().invoke(app, ["run", "m.toml", *(["--seed", seed] if seed else [])])
        assert result.exit_code == 0, result.output
        assert seeds_run() == expected  # the full run computed nothing again


def test_a_process_tags_its_results_with_the_commit_it_started_from(tmp_path, monkeypatch):
    """Every store a process opens tags results with the commit read when it opened its first:
    editing the tree during a long run (the commit now reads -dirty) changes nothing it runs."""
    from suite import provenance

    monkeypatch.setattr(provenance, "_PROCESS_COMMIT", [])
    monkeypatch.setattr(provenance, "git_commit", lambda: "abc123")
    first = Store(f"sqlite:///{tmp_path / 'a.db'}")
    monkeypatch.setattr(provenance, "git_commit", lambda: "abc123-dirty")
    later = Store(f"sqlite:///{tmp_path / 'a.db'}")
    assert first.commit == later.commit == "abc123"


def test_a_stores_artifacts_live_beside_its_database_wherever_the_command_runs(
    tmp_path, monkeypatch
):
    """A store named by MLFLOW_TRACKING_URI keeps new experiments' artifacts in `artifacts/`
    beside its database, not under the directory a command happens to start in."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = Store(f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}")
    experiment = store.client.get_experiment(store.experiment_id("beside"))
    assert experiment.artifact_location == (tmp_path / "shared" / "artifacts").as_uri()
    assert not (elsewhere / "mlruns").exists()
