"""Issue 13, tried as an attacker with write access to a shared store and as a careless user: no
code runs from the store, no file outside the report folder is touched, store strings reach the
report escaped, bad inputs are one line (never a traceback or a hang), reading writes nothing, and
the MLflow UI sees experiments, datasets and models as MLflow 3 expects."""

import json
import os
import socket
import sqlite3
import stat
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from markdown_it import MarkdownIt
from PIL import Image
from pypdf import PdfReader
from tiny_manifests import lines, store_manifest, trained_store, words
from typer.testing import CliRunner

from suite.cache import find_model_run
from suite.cli import app
from suite.tracking import Store

TINY = store_manifest("sec")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store holding one finished tiny run of TINY (trained once for the module)."""
    return trained_store(tmp_path_factory.mktemp("store"), TINY)


@pytest.fixture
def workdir(trained, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return trained


def child_runs(store: Store, exp_id: str):
    return [
        r
        for r in store.client.search_runs([exp_id], order_by=["attributes.start_time DESC"])
        if r.data.tags.get("suite.level") not in ("condition", "report")
    ]


class Payload(torch.nn.Module):
    """Unpickling this runs `exec`: it writes the marker file named at pickling time."""

    marker = ""

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


# ---- 1. no code from the store ---------------------------------------------------------------


def plant_payload_run(store: Store, exp_id: str, marker: Path) -> str:
    """What an attacker with write access can do: a FINISHED child of the victim's parent with the
    victim's config hash, whose model is a pickle payload in both the weights format and the
    `mlflow.pytorch` pickle format (the run's tags point at both)."""
    victim = child_runs(store, exp_id)[-1]
    keys = ("condition", "kind", "seed", "role", "config_hash", "data_digest", "mlflow.parentRunId")
    tags = {k: victim.data.tags[k] for k in keys}
    run_id = store.client.create_run(exp_id, tags=tags).info.run_id
    Payload.marker = str(marker)
    logged = store.client.create_logged_model(
        exp_id, name="model", source_run_id=run_id, params={"arch": "tiny", "dropout": "0.0"}
    )
    tmp = marker.parent / "payload"
    tmp.mkdir(exist_ok=True)
    torch.save({"net.0.weight": Payload()}, tmp / "weights.pt")
    store.client.log_model_artifacts(logged.model_id, str(tmp))
    store.client.finalize_logged_model(logged.model_id, "READY")
    mlflow.set_tracking_uri(store.uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            Payload(), name="model", serialization_format="pickle", pip_requirements=[]
        )
    store.client.set_tag(run_id, "suite.model_id", logged.model_id)
    store.client.set_tag(run_id, "suite.model_uri", info.model_uri)
    store.client.log_metric(run_id, "final_test_acc", 0.99)
    store.client.set_terminated(run_id, "FINISHED")
    return run_id


def test_a_planted_pickle_payload_never_runs_and_is_refused_in_one_line(workdir):
    store = Store()
    exp_id = store.experiment_id("sec")
    marker = workdir / "pwned"
    planted = plant_payload_run(store, exp_id, marker)
    try:
        result = CliRunner().invoke(app, ["run", "m.toml"])
    finally:
        store.client.delete_run(planted)  # the module's store stays usable for the other tests
    assert not marker.exists(), "the payload ran"
    text = words(result.output)
    assert "Traceback" not in text
    assert result.exit_code == 1 and f"run {planted}" in text and "not plain tiny weights" in text
    assert "99.0%" not in text


def test_reuse_trusts_only_finished_own_children_of_the_conditions_parents(workdir):
    store = Store()
    exp_id = store.experiment_id("sec")
    run = child_runs(store, exp_id)[-1]
    parent, cfg = run.data.tags["mlflow.parentRunId"], run.data.tags["config_hash"]
    condition, digest = run.data.tags["condition"], run.data.tags["data_digest"]
    assert find_model_run(store, exp_id, condition, cfg, digest).run_id == run.info.run_id
    assert find_model_run(store, exp_id, condition, cfg, "0" * 16) is None  # other data
    made_up = store.client.create_run(exp_id, tags={"condition": "base"}).info.run_id
    store.client.set_tag(run.info.run_id, "mlflow.parentRunId", made_up)
    try:
        assert find_model_run(store, exp_id, condition, cfg, digest) is None
    finally:
        store.client.set_tag(run.info.run_id, "mlflow.parentRunId", parent)
        store.client.delete_run(made_up)
    db = workdir / "mlruns" / "mlflow.db"
    with sqlite3.connect(db) as con:  # as a writer of the database could: artifacts elsewhere
        con.execute(
            "update runs set artifact_uri = ? where run_uuid = ?",
            ("file:///tmp/elsewhere", run.info.run_id),
        )
    try:
        assert find_model_run(store, exp_id, condition, cfg, digest) is None
    finally:
        with sqlite3.connect(db) as con:
            con.execute(
                "update runs set artifact_uri = ? where run_uuid = ?",
                (run.info.artifact_uri, run.info.run_id),
            )
    store.client.update_run(run.info.run_id, status="FAILED")
    try:
        assert find_model_run(store, exp_id, condition, cfg, digest) is None
    finally:
        store.client.update_run(run.info.run_id, status="FINISHED")


def test_models_are_plain_weights_that_rebuild_and_show_in_mlflow(workdir):
    store = Store()
    exp_id = store.experiment_id("sec")
    run = child_runs(store, exp_id)[-1]
    (output,) = run.outputs.model_outputs  # the runs table's Models column
    logged = store.client.get_logged_model(output.model_id)
    assert logged.params == {"arch": "tiny", "dropout": "0.0"} and logged.status == "READY"
    files = [f.path for f in store.client.list_logged_model_artifacts(logged.model_id)]
    assert files == ["weights.pt"]
    model = store.load_model(run.info.run_id)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


# ---- 2. paths stay where they belong ---------------------------------------------------------


def test_report_out_never_replaces_a_users_folder_or_file(workdir):
    runner = CliRunner()
    mine = workdir / "mine"
    mine.mkdir(exist_ok=True)
    (mine / "thesis.tex").write_text("years of work")
    result = runner.invoke(app, ["report", "sec", "--out", "mine", "--format", "md"])
    assert result.exit_code == 2 and len(lines(result.output)) == 1, result.output
    assert "did not write" in result.output
    assert (mine / "thesis.tex").read_text() == "years of work"
    afile = workdir / "notes.txt"
    afile.write_text("keep me")
    result = runner.invoke(app, ["report", "sec", "--out", "notes.txt", "--format", "md"])
    assert result.exit_code == 2 and len(lines(result.output)) == 1, result.output
    assert afile.read_text() == "keep me"
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".notes")) == []


def test_a_report_replaces_its_own_folder_with_the_users_permissions(workdir):
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["report", "sec", "--out", "rep", "--format", "md"])
        assert result.exit_code == 0, result.output
    mode = stat.S_IMODE((workdir / "rep").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask
    assert "logged the report as run" in result.output


def test_an_experiment_renamed_to_a_path_writes_nothing_outside_reports(workdir, tmp_path):
    store = Store()
    exp_id = store.experiment_id("sec")
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "data.csv").write_text("1,2,3")
    store.client.rename_experiment(exp_id, str(outside))
    try:
        result = CliRunner().invoke(app, ["report", "--format", "md"])
    finally:
        store.client.rename_experiment(exp_id, "sec")
    assert result.exit_code == 2 and len(lines(result.output)) == 1, result.output
    assert "not a safe folder name" in result.output
    assert [p.name for p in outside.iterdir()] == ["data.csv"]


def test_a_condition_named_as_an_image_does_not_embed_a_local_file(workdir, tmp_path):
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((13, 7), 200, dtype=np.uint8)).save(secret)
    evil = f"![x]({secret})"
    store = Store()
    exp_id = store.experiment_id("sec")
    runs = [r for r in store.client.search_runs([exp_id]) if r.data.tags.get("condition")]
    for r in runs:
        store.client.set_tag(r.info.run_id, "condition", evil)
    try:
        result = CliRunner().invoke(app, ["report", "sec", "--out", "evil", "--baseline", evil])
    finally:
        for r in runs:
            store.client.set_tag(r.info.run_id, "condition", "base")
    assert result.exit_code == 0, result.output
    md = (workdir / "evil" / "report.md").read_text(encoding="utf-8")
    assert str(secret) in md  # shown as text
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    images = [c.attrGet("src") for t in tokens for c in t.children or [] if c.type == "image"]
    assert images and all(src.startswith("figures/") for src in images)
    sizes = [
        (image.image.width, image.image.height)
        for page in PdfReader(workdir / "evil" / "report.pdf").pages
        for image in page.images
    ]
    assert sizes and (7, 13) not in sizes


# ---- 4. one line, never a traceback, never a hang --------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "...=1"], "is not a field path"),
        (["--set", "experiment.seeds=[-1]"], "experiment.seeds[0]: must be >= 0"),
        (["--set", "experiment.seeds=[4294967296]"], "experiment.seeds[0]: must be < 4294967296"),
        (["--set", "experiment.attack_seed=-1"], "experiment.attack_seed: must be >= 0"),
        (["--set", "data.split_seed=-1"], "data.split_seed: must be >= 0"),
        (["--set", "train.batch_size=100000000"], "train.batch_size: must be <= 65536"),
    ],
)
def test_bad_settings_are_one_line_in_validate_and_run(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text(TINY)
    for command in ("validate", "run"):
        result = CliRunner().invoke(app, [command, "m.toml", *args])
        assert result.exit_code == 2, result.output
        assert len(lines(result.output)) == 1 and expected in result.output, result.output
    assert not (tmp_path / "mlruns").exists()


def test_schema_bounds_what_run_cannot_allocate(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(
        TINY
        + '\n[[conditions]]\nname = "dm"\nkind = "synthetic"\nmethod = "dm"\nipc = 1\n'
        + "[conditions.params]\nnet_width = 100000\n"
    )
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert lines(result.output) == [
        f"{path}: conditions[1].params.net_width: must be <= 1024 (got 100000)"
    ]


def test_a_manifest_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.toml"
    text = TINY.replace('"base"', '"b\xe4se"')
    path.write_bytes(text.encode("latin-1"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    offset = text.index("\xe4")
    assert lines(result.output) == [
        f"{path}: not UTF-8 text (byte 0xe4 at offset {offset}); save it as UTF-8"
    ]


@pytest.mark.timeout(60)
def test_an_unreachable_server_fails_fast_naming_it(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["list"])
    assert time.perf_counter() - start < 15
    assert result.exit_code == 2 and len(lines(result.output)) == 1, result.output
    assert "http://127.0.0.1:9 is unreachable" in result.output


# ---- 5. read-only means read-only ------------------------------------------------------------


def test_reading_a_deleted_experiment_does_not_restore_it(workdir):
    store = Store()
    exp_id = store.experiment_id("sec")
    store.client.delete_experiment(exp_id)
    try:
        for args in (["list", "sec"], ["report", "sec", "--out", "r2"]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 2 and "is deleted" in result.output, result.output
            assert store.client.get_experiment(exp_id).lifecycle_stage == "deleted"
    finally:
        store.client.restore_experiment(exp_id)
    assert not (workdir / "r2").exists()


def test_a_mistyped_sqlite_uri_is_an_error_and_creates_nothing(tmp_path, monkeypatch):
    typo = tmp_path / "mlrun" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{typo}")
    for args in (["ui"], ["list"], ["report"]):  # ui first: it execs a server if a db exists
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and len(lines(result.output)) == 1, result.output
        assert str(typo) in result.output
    assert not typo.parent.exists()


# ---- 6. MLflow conventions -------------------------------------------------------------------


def test_experiments_hold_training_runs_with_their_dataset(workdir):
    store = Store()
    exp = store.client.get_experiment_by_name("sec")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    run = child_runs(store, exp.experiment_id)[-1]
    (dataset_input,) = run.inputs.dataset_inputs  # the runs table's Dataset column
    dataset = dataset_input.dataset
    assert dataset.name == "mnist-5k" and len(dataset.digest) == 16
    assert json.loads(dataset.profile) == {"train": 400, "val": 100, "test": 1000}


# ---- issue 31: reports keep a user's files; `suite ui` opens the training runs ---------------


def artifact_paths(store: Store, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for f in store.client.list_artifacts(run_id, path):
        out += artifact_paths(store, run_id, f.path) if f.is_dir else [f.path]
    return out


def test_a_report_keeps_the_files_a_user_added_and_says_so(workdir):
    runner = CliRunner()
    result = runner.invoke(app, ["report", "sec", "--format", "md"])
    assert result.exit_code == 0, result.output
    folder = workdir / "reports" / "sec"
    (folder / "my-notes.md").write_text("my notes")
    (folder / "drafts" / "empty").mkdir(parents=True)
    (folder / "drafts" / "v1.md").write_text("draft")
    (folder / "figures").mkdir(exist_ok=True)
    (folder / "figures" / "mine.png").write_bytes(b"my figure")
    result = runner.invoke(app, ["report", "sec", "--format", "md"])
    assert result.exit_code == 0, result.output
    assert (folder / "my-notes.md").read_text() == "my notes"
    assert (folder / "drafts" / "v1.md").read_text() == "draft"
    assert (folder / "drafts" / "empty").is_dir()
    assert (folder / "figures" / "mine.png").read_bytes() == b"my figure"
    assert (folder / "report.md").is_file()
    text = words(result.output)
    assert "kept 3 file(s)" in text and "my-notes.md" in text and "drafts" in text
    store = Store()
    exp_id = store.experiment_id("sec", create=False)
    (newest,) = store.client.search_runs(
        [exp_id], "tags.`suite.level` = 'report'", order_by=["attributes.start_time DESC"],
        max_results=1,
    )  # fmt: skip
    logged = artifact_paths(store, newest.info.run_id)
    assert "report/report.md" in logged
    assert not [p for p in logged if "my-notes" in p or "drafts" in p or "mine.png" in p]
    # a user's file where the new report writes one is refused, and nothing changes
    marker = folder / ".suite-report"
    listing = marker.read_text()
    marker.write_text(listing.replace("report.md\n", ""))
    (folder / "report.md").write_text("the user's own report.md")
    result = runner.invoke(app, ["report", "sec", "--format", "md"])
    assert result.exit_code == 2 and len(lines(result.output)) == 1, result.output
    assert "report.md was not written by `suite report`" in words(result.output)
    assert (folder / "report.md").read_text() == "the user's own report.md"
    assert (folder / "my-notes.md").is_file()


def test_a_report_folder_with_an_old_marker_keeps_what_the_suite_never_writes(workdir):
    folder = workdir / "legacy"
    (folder / "figures").mkdir(parents=True)
    (folder / ".suite-report").write_text("written by `suite report`; replaced by the next one\n")
    (folder / "report.md").write_text("an old report")
    (folder / "figures" / "old_plot.png").write_bytes(b"old")
    (folder / "notes.md").write_text("mine")
    result = CliRunner().invoke(app, ["report", "sec", "--out", "legacy", "--format", "md"])
    assert result.exit_code == 0, result.output
    assert (folder / "notes.md").read_text() == "mine"
    assert not (folder / "figures" / "old_plot.png").exists()
    assert (folder / "report.md").read_text() != "an old report"


def test_ui_binds_first_and_prints_a_url_to_the_training_runs(workdir, monkeypatch):
    store = Store()
    exp_id = store.experiment_id("sec", create=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(os, "execv", lambda *a: pytest.fail("served on a taken port"))
        result = CliRunner().invoke(app, ["ui", "--port", str(port)])
    assert result.exit_code == 2 and len(lines(result.output)) == 1, result.output
    assert f"--port {port}: cannot listen there" in result.output and "http" not in result.output
    served = []

    def execv(path, argv):
        served.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", execv)
    result = CliRunner().invoke(app, ["ui", "--port", str(port)])
    assert result.exit_code == 0, result.output
    assert f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?" in result.output
    assert "viewStateShareKey=suite" in result.output  # the view whose columns the run chose
    view = json.loads(store.client.get_experiment(exp_id).tags["mlflow.sharedViewState.suite"])
    assert "metrics.`final_test_acc`" in view["selectedColumns"]
    assert "metrics.`attack.cw.median_l2`" in view["selectedColumns"]
    assert served and served[0][served[0].index("--port") + 1] == str(port)
    # the collapsed parent row of each condition shows its key metrics before a click
    (parent,) = store.client.search_runs([exp_id], "tags.`suite.level` = 'condition'")
    children = [r.data.metrics for r in child_runs(store, exp_id) if r.info.status == "FINISHED"]
    shown = parent.data.metrics
    assert shown["final_test_acc"] in [pytest.approx(m["final_test_acc"]) for m in children]
    medians = [m.get("attack.cw.median_l2", np.nan) for m in children]
    medians = [v for v in medians if np.isfinite(v)]
    if medians:  # no median where no digit was fooled
        assert shown["attack.cw.median_l2"] in [pytest.approx(v) for v in medians]
