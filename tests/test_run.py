"""End to end: `suite run` into a temp store, reuse, --force, interrupts, list, ui, report."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tiny_manifests import TINY_CW, tiny_manifest, to_toml
from typer.testing import CliRunner

from suite.cli import app
from suite.manifest import load_manifest
from suite.progress import NullProgress
from suite.report.publish import markers
from suite.runner import run_manifest
from suite.schema import MODEL_ID
from suite.tracking import Store

TINY = to_toml(
    tiny_manifest(
        "tiny-e2e",
        attacks=[{**TINY_CW, "params": {**TINY_CW["params"], "binary_steps": 4}}],
    )
)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A clean cwd with its own ./mlruns store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "m.toml").write_text(TINY)
    return tmp_path


def model_runs(store: Store, name: str = "tiny-e2e"):
    exp = store.client.get_experiment_by_name(name)
    return [
        r
        for r in store.client.search_runs([exp.experiment_id])
        if r.data.tags.get("suite.level") != "condition"
    ]


def test_run_then_rerun_reuses_then_force_retrains(workdir):
    runner = CliRunner()
    first = runner.invoke(app, ["run", "m.toml"])
    assert first.exit_code == 0, first.output
    assert "trained" in first.output and "base" in first.output
    # off a terminal (a log): a line per finished bar and per finished job, with what is left
    assert re.search(r"finished base seed 0 model: cw \(12/12\) in \d+ s", first.output)
    assert re.search(r"job 1/1 finished: base seed 0; 0 left", first.output)
    store = Store()
    runs = model_runs(store)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    for key in (
        "condition",
        "kind",
        "seed",
        "config_hash",
        "suite_version",
        "git_commit",
        MODEL_ID,
    ):
        assert key in tags
    assert params["train.lr"] == "0.003" and params["data.dataset"] == "mnist-5k"
    assert metrics["final_test_acc"] > 0.6
    history = store.client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2]
    assert 0 <= metrics["attack.cw.success_rate"] <= 1
    records = store.load_table(run.info.run_id, "attacks/cw.parquet")
    assert len(records) == 12 and {"sample_index", "l2", "success", "grad_evals"} <= set(
        records.columns
    )
    # the model loads back and gives the logged accuracy
    spec = load_manifest(workdir / "m.toml")
    from suite.data import load_splits
    from suite.training import accuracy

    d = spec.data
    splits = load_splits(d.dataset, d.root, d.train_samples, d.val_samples, d.split_seed)
    model = store.load_model(run.info.run_id)
    assert accuracy(model, splits.test.x, splits.test.y) == pytest.approx(
        metrics["final_test_acc"], abs=1e-6
    )

    second = runner.invoke(app, ["run", "m.toml"])
    assert second.exit_code == 0, second.output
    assert "reused" in second.output
    assert "job 1/1 finished: base seed 0 (model reused from the store); 0 left" in second.output
    assert len(model_runs(store)) == 1  # nothing retrained

    # a new attack on a reused model: only the attack runs
    third = runner.invoke(app, ["run", "m.toml", "--set", "attacks[0].params.max_iterations=20"])
    assert third.exit_code == 0 and "reused" in third.output
    assert len(model_runs(store)) == 1

    forced = runner.invoke(app, ["run", "m.toml", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "trained" in forced.output
    assert len(model_runs(store)) == 2

    listing = runner.invoke(app, ["list"])
    assert listing.exit_code == 0 and "tiny-e2e" in listing.output


class Interrupting(NullProgress):
    """Progress that raises Ctrl-C when the named bar starts."""

    def __init__(self, when: str) -> None:
        self.when = when

    def task(self, description, total):
        if self.when in description:
            raise KeyboardInterrupt
        return super().task(description, total)


def test_targeted_all_attack_pairs_each_row_with_its_own_clean_image(workdir):
    """target_mode = "all" writes 9 rows per sample; examples and the grid follow the rows."""
    import numpy as np

    from suite.data import load_splits

    result = CliRunner().invoke(
        app,
        [
            "run", "m.toml", "--set", "data.attack_samples=3",
            "--set", "attacks[0].params.targeted=true",
            "--set", 'attacks[0].params.target_mode="all"',
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    store = Store()
    (run,) = model_runs(store)
    records = store.load_table(run.info.run_id, "attacks/cw.parquet")
    assert len(records) == 27 and records.groupby("sample_index").size().eq(9).all()
    assert (records["target"] != records["label"]).all()
    examples = np.load(
        store.client.download_artifacts(run.info.run_id, "attacks/cw.examples.npy", str(workdir))
    )
    test_x = load_splits("mnist-5k", None, 600, 200, 0).test.x.numpy()
    wanted = test_x[records["sample_index"].to_numpy()[: len(examples)], 0]
    np.testing.assert_array_equal(examples[:, 0], wanted)
    names = {f.path for f in store.client.list_artifacts(run.info.run_id, "attacks")}
    assert "attacks/cw.png" in names


@pytest.mark.parametrize("when", ["train", ": cw"])
def test_interrupt_leaves_no_running_run_and_rerun_finishes(workdir, when):
    spec = load_manifest(workdir / "m.toml")
    store = Store()
    with pytest.raises(KeyboardInterrupt):
        run_manifest(spec, store=store, progress=Interrupting(when))
    exp = store.client.get_experiment_by_name("tiny-e2e")
    statuses = {r.info.status for r in store.client.search_runs([exp.experiment_id])}
    assert "RUNNING" not in statuses and "KILLED" in statuses
    rows = run_manifest(spec, store=store)
    assert [r.status for r in rows] == ["FINISHED"]
    assert rows[0].reused == (
        when != "train"
    )  # a model logged before the interrupt is not retrained
    assert "success_rate" in rows[0].attacks["cw"]
    statuses = {r.info.status for r in store.client.search_runs([exp.experiment_id])}
    assert statuses <= {"FINISHED", "KILLED"}
    finished = [r for r in model_runs(store) if r.info.status == "FINISHED"]
    assert len(finished) == 1


def test_stale_running_run_from_dead_process_is_marked_failed(workdir):
    store = Store()
    exp_id = store.experiment_id("tiny-e2e")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = store.client.create_run(
        exp_id, tags={"suite.host": socket.gethostname(), "suite.pid": str(dead.pid)}
    )
    live = store.client.create_run(
        exp_id, tags={"suite.host": socket.gethostname(), "suite.pid": str(os.getpid())}
    )
    assert store.reap_stale(exp_id) == [run.info.run_id]
    assert store.client.get_run(run.info.run_id).info.status == "FAILED"
    assert store.client.get_run(live.info.run_id).info.status == "RUNNING"


def test_diverging_condition_is_reported_and_others_finish(workdir):
    text = TINY.replace(
        'name = "base"\nkind = "standard"',
        'name = "base"\nkind = "standard"\n\n'
        '[[conditions]]\nname = "t5"\nkind = "defensive"\ntemperature = 5',
    )
    (workdir / "m.toml").write_text(text)
    result = CliRunner().invoke(
        app, ["run", "m.toml", "--set", "train.lr=1e12", "--set", "train.optimizer=sgd"]
    )
    assert result.exit_code == 1
    assert "FAILED" in result.output and "diverged" in result.output
    assert "Traceback" not in result.output


def test_missing_data_is_one_line_exit_2_and_writes_nothing(workdir):
    result = CliRunner().invoke(
        app,
        [
            "run",
            "m.toml",
            "--set",
            "data.dataset=mnist",
            "--set",
            f"data.root={workdir / 'nothing'}",
        ],
    )
    assert result.exit_code == 2
    assert "suite data download mnist" in result.output
    assert not (workdir / "mlruns").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(180)
def test_ui_serves_the_runs_over_the_mlflow_rest_api(workdir):
    store = Store()
    exp_id = store.experiment_id("ui-check")
    run_id = store.client.create_run(exp_id, tags={"condition": "base"}).info.run_id
    port = free_port()
    suite_bin = Path(sys.executable).parent / "suite"
    proc = subprocess.Popen(
        [str(suite_bin), "ui", "--port", str(port)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        body = json.dumps({"experiment_ids": [exp_id]}).encode()
        deadline = time.time() + 150
        while True:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=5) as resp:
                    found = json.load(resp)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.time() < deadline, "suite ui did not answer"
                time.sleep(1)
        assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # mlflow server has worker children
        proc.wait(timeout=30)


def test_report_on_a_tiny_experiment_and_its_errors(workdir):
    runner = CliRunner()
    empty = runner.invoke(app, ["report"])  # no store yet: an error, and none is created
    assert empty.exit_code == 2 and "no MLflow store at" in empty.output
    assert not (workdir / "mlruns").exists()
    text = TINY.replace(
        'name = "base"\nkind = "standard"',
        'name = "base"\nkind = "standard"\n\n'
        '[[conditions]]\nname = "t20"\nkind = "defensive"\ntemperature = 20',
    )
    (workdir / "m.toml").write_text(text)
    assert runner.invoke(app, ["run", "m.toml"]).exit_code == 0
    unknown = runner.invoke(app, ["report", "nope"])
    assert unknown.exit_code == 2 and "no experiment named 'nope'" in unknown.output
    bad_base = runner.invoke(app, ["report", "tiny-e2e", "--baseline", "zzz"])
    assert bad_base.exit_code == 2 and "baseline condition 'zzz'" in bad_base.output

    result = runner.invoke(app, ["report", "--out", "rep"])
    assert result.exit_code == 0, result.output
    assert "cw" in result.output and "t20" in result.output
    md = (workdir / "rep" / "report.md").read_text()
    for heading in ("Set-up", "Accuracy", "Conclusion"):
        assert heading in md
    assert "t20" in md and "base" in md
    import matplotlib.image
    from pypdf import PdfReader

    pngs = sorted((workdir / "rep" / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        assert matplotlib.image.imread(png).size > 0
    pdf = PdfReader(workdir / "rep" / "report.pdf")
    assert len(pdf.pages) >= 1
    text = " ".join(page.extract_text() for page in pdf.pages)
    assert "Conclusion" in text
    store = Store()
    exp = store.client.get_experiment_by_name("tiny-e2e")
    reports = [
        r
        for r in store.client.search_runs([exp.experiment_id])
        if r.data.tags.get("suite.level") == "report"
    ]
    assert len(reports) == 1
    assert store.client.list_artifacts(reports[0].info.run_id, "report")

    # publish: the report in results/<name>, a README of how it was made, the headline spliced
    # into the top README between its markers; without markers nothing is written
    readme = workdir / "README.md"
    readme.write_text("# x\n")
    no_markers = runner.invoke(app, ["publish", "m.toml"])
    assert no_markers.exit_code == 2 and "README.md has no results markers" in no_markers.output
    assert not (workdir / "results").exists()
    start, end = markers("tiny-e2e")
    readme.write_text(f"# x\n\n{start}\nstale block\n{end}\n\nafter\n")
    for _ in range(2):  # a second publish replaces the first, in the folder and in the README
        done = runner.invoke(app, ["publish", "m.toml"])
        assert done.exit_code == 0, done.output
    out = workdir / "results" / "tiny-e2e"
    assert (out / "report.md").is_file() and (out / "report.pdf").is_file()
    published = (out / "README.md").read_text()
    assert "| t20 | base |" in published and "suite publish m.toml" in published
    assert "mnist-5k: " in published and "CPU, " in published
    assert "summed over jobs" in published and "predicted by `suite run --dry-run`" in published
    top = readme.read_text()
    assert top.count(start) == 1 and "stale block" not in top and top.endswith("after\n")
    assert "| t20 | base |" in top and "results/tiny-e2e/README.md" in top


def test_job_lines_count_over_the_whole_run_across_phases(workdir):
    """Transfer sources run in a phase of their own; the log counts jobs over the run, not per
    phase (a log that said 'job 2/2 … 0 left' and then 'job 1/2' again misled)."""
    from suite.manifest import validate_manifest
    from suite.runner import Row, job_done_line

    raw = tiny_manifest(
        "phases",
        seeds=[0, 1],
        conditions=[{"name": "base", "kind": "standard"}, {"name": "t5", "kind": "defensive",
                                                           "temperature": 5}],
        attacks=[TINY_CW, {**TINY_CW, "name": "cw-from-base", "source": "base"}],
    )  # fmt: skip
    lines: list[str] = []

    def executor(jobs, uri, experiment_id, parents, progress):
        rows = [[Row(condition=j.condition, kind=j.kind, seed=j.seed, role="model",
                     status="FINISHED")] for j in jobs]  # fmt: skip
        lines.extend(
            job_done_line(j, r, done) for done, (j, r) in enumerate(zip(jobs, rows, strict=True), 1)
        )
        return rows

    run_manifest(validate_manifest(raw, "m.toml"), store=Store(), executor=executor)
    assert [re.sub(r"^\S+ ", "", line) for line in lines] == [
        "job 1/4 finished: base seed 0; 3 left",
        "job 2/4 finished: base seed 1; 2 left",
        "job 3/4 finished: t5 seed 0; 1 left",
        "job 4/4 finished: t5 seed 1; 0 left",
    ]


def test_a_job_line_estimates_the_time_left_from_the_computed_jobs_pace():
    from suite.report.formatting import duration
    from suite.runner import Job, Row, job_done_line

    job = Job(manifest={}, condition="t50", kind="defensive", seed=1, earlier=5, run_total=15)
    row = Row(condition="t50", kind="defensive", seed=1, role="student", status="FINISHED")
    line = job_done_line(job, [row], 1, pace=25 * 60)
    assert line.endswith("job 6/15 finished: t50 seed 1; 9 left (about 3 h 45 min at 25 min per "
                         "computed job)")  # fmt: skip
    assert job_done_line(job, [row], 1).endswith("; 9 left")  # no pace yet: no estimate
    assert [duration(s) for s in (45, 13 * 60, 170 * 60)] == ["45 s", "13 min", "2 h 50 min"]


def test_both_executors_report_a_failed_job_through_one_path():
    """A worker's crash (Ray) and a user-fixable error (either executor) become the same FAILED
    row shape and the same two log lines."""
    from suite.runner import Job, failed_row, log_finished

    class Log:
        lines: list[str] = []

        def log(self, message: str) -> None:
            self.lines.append(message)

    job = Job(manifest={}, condition="t50", kind="defensive", seed=2)
    crash = failed_row(job, RuntimeError("Traceback ...\n  deep inside\nCUDA out of memory"))
    assert crash.error == "RuntimeError: CUDA out of memory" and crash.status == "FAILED"
    assert failed_row(job, KeyError()).error == "KeyError: KeyError()"
    log = Log()
    log_finished(log, job, [failed_row(job, "training diverged: lower lr")], 1)  # type: ignore[arg-type]
    assert log.lines[0] == "FAILED t50 seed 2: training diverged: lower lr"
    assert log.lines[1].endswith("job 1/1 failed: t50 seed 2; 0 left")


def test_a_job_another_process_runs_is_put_off_and_its_result_kept_in_order(tmp_path, monkeypatch):
    """Two processes sharing a study split its jobs: a job whose claim is held elsewhere is put
    off to the end (then waited for), the others run first, and the rows come back in job order."""
    import threading

    from suite import runner
    from suite.schema import Status

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    held, release = threading.Event(), threading.Event()
    jobs = [runner.Job(manifest={}, condition="a", kind="standard", seed=s) for s in (0, 1, 2)]

    def other_process() -> None:
        with Store(uri).claim(runner.job_claim(jobs[0], "e", "p")):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=other_process)
    holder.start()
    held.wait(60)
    calls = []

    def run_job(job, uri, experiment_id, parent_id, progress):
        calls.append(job.seed)
        if job.seed == 2:
            release.set()
        return [runner.Row(job.condition, job.kind, job.seed, "model", Status.FINISHED)]

    monkeypatch.setattr(runner, "run_job", run_job)
    results = runner.local_executor(jobs, uri, "e", {"a": "p"}, NullProgress())
    holder.join(60)
    assert calls == [1, 2, 0]
    assert [rows[0].seed for rows in results] == [0, 1, 2]
