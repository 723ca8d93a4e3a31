"""Issue 28, tried as an attacker or a clumsy colleague would: markup and mathtext in names, deep
TOML, broken, truncated and linked artifacts, non-finite weights, servers that never answer or
answer 500, absurd counts, bad download options and SIGTERM. Each ends in one line and exit 2 (or,
for a broken run inside a good store, a report that names it), never a traceback or a hang."""

import http.server
import io
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import annotated_types
import pytest
import torch
from pydantic import BaseModel
from rich.console import Console
from tiny_manifests import lines, store_manifest, tiny_manifest, to_toml, trained_store, words
from typer.testing import CliRunner

from suite import console as console_module
from suite.cli import app
from suite.manifest import Manifest
from suite.tracking import Store

SUITE = str(Path(sys.executable).parent / "suite")
TINY = store_manifest("hostile")


def one_line_error(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert len(lines(result.output)) == 1, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in words(result.output), result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store holding one finished tiny run of TINY (trained once for the module)."""
    return trained_store(tmp_path_factory.mktemp("hostile"), TINY)


@pytest.fixture
def workdir(trained, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return trained


def model_run(store: Store):
    exp = store.client.get_experiment_by_name("hostile")
    runs = store.client.search_runs(
        [exp.experiment_id], "tags.role = 'model'", order_by=["attributes.start_time DESC"]
    )
    return runs[0]


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


# ---- markup and mathtext in names ------------------------------------------------------------


@pytest.mark.parametrize("name", ["[/x]", "[bold]", "[link=https://evil.example]x[/link]"])
def test_markup_in_a_name_on_the_command_line_is_printed_as_text(workdir, name):
    result = CliRunner().invoke(app, ["list", name])
    one_line_error(result, f"no experiment named {name!r}")
    result = CliRunner().invoke(app, ["validate", "m.toml", "--set", f"{name}=1"])
    one_line_error(result, name)


def test_a_stored_link_tag_never_becomes_a_terminal_hyperlink(workdir, monkeypatch):
    store = Store()
    run = model_run(store)
    evil = "[link=file:///etc/passwd]click-me[/link]"
    store.client.set_tag(run.info.run_id, "condition", evil)
    screen = io.StringIO()
    monkeypatch.setattr(
        console_module, "console", Console(file=screen, force_terminal=True, width=300)
    )
    try:
        result = CliRunner().invoke(app, ["list"])
    finally:
        store.client.set_tag(run.info.run_id, "condition", "base")
    assert result.exit_code == 0, result.output
    shown = screen.getvalue()
    assert "\x1b]8;" not in shown  # no OSC-8 hyperlink escape
    assert "click-me" in shown and "file:///etc/passwd" in shown  # the tag, shown as text


def test_mathtext_in_a_stored_condition_name_is_drawn_as_text(workdir):
    store = Store()
    exp = store.client.get_experiment_by_name("hostile")
    evil = r"$\frac{1}{$"
    tagged = [
        r for r in store.client.search_runs([exp.experiment_id]) if r.data.tags.get("condition")
    ]
    for r in tagged:
        store.client.set_tag(r.info.run_id, "condition", evil)
    try:
        result = CliRunner().invoke(
            app, ["report", "hostile", "--out", "math", "--baseline", evil, "--format", "md"]
        )
    finally:
        for r in tagged:
            store.client.set_tag(r.info.run_id, "condition", r.data.tags["condition"])
    assert result.exit_code == 0, result.output
    assert any((workdir / "math" / "figures").glob("*.png"))


# ---- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["a = " + "[" * 3000 + "]" * 3000, "a = " + "{b = " * 3000 + "1" + "}" * 3000],
    ids=["arrays", "tables"],
)
def test_a_deeply_nested_manifest_is_one_line(tmp_path, text):
    path = tmp_path / "deep.toml"
    path.write_text(text)
    one_line_error(CliRunner().invoke(app, ["validate", str(path)]), "nested over 16 levels")


def test_a_deeply_nested_set_value_is_one_line(workdir):
    deep = "[" * 3000 + "]" * 3000
    result = CliRunner().invoke(app, ["validate", "m.toml", "--set", f"train.epochs={deep}"])
    one_line_error(result, "--set train.epochs: tables or lists nested over 16 levels")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("train.epochs=1180591620717411303424", "train.epochs: must be <= 10000"),
        ("attacks[0].params.max_iterations=10000000000", "must be <= 1000000"),
        ("attacks[0].params.binary_steps=1000", "must be <= 100"),
        ("train.lr_decay_epochs=[5, 100000]", "train.lr_decay_epochs[1]: must be <= 10000"),
    ],
)
def test_absurd_counts_are_refused_by_validate_with_their_bound(workdir, setting, expected):
    result = CliRunner().invoke(app, ["validate", "m.toml", "--set", setting])
    one_line_error(result, expected)


def _fields(model: type[BaseModel], seen: set) -> typing.Iterator[tuple[str, object, list]]:
    """(model.field, annotation part, metadata) of every field reachable from `model`."""
    if model in seen:
        return
    seen.add(model)

    def parts(annotation):
        yield annotation
        for arg in typing.get_args(annotation):
            yield from parts(arg)

    for name, info in model.model_fields.items():
        for part in parts(info.annotation):
            if isinstance(part, type) and issubclass(part, BaseModel):
                yield from _fields(part, seen)
            elif part is int:
                yield f"{model.__name__}.{name}", info.annotation, info.metadata


def test_every_count_a_manifest_sets_has_an_upper_bound():
    """Every int a manifest can set (epochs, steps, iterations, samples, seeds, list items) has a
    `le`/`lt` bound, so `suite validate` refuses what `suite run` cannot do."""

    def bounded(annotation, metadata) -> bool:
        if any(isinstance(m, annotated_types.Le | annotated_types.Lt) for m in metadata):
            return True
        # list[Annotated[int, Field(le=…)]] and Annotated aliases carry the bound inside
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is typing.Annotated and int in typing.get_args(arg):
                inner = typing.get_args(arg)[1:]
                if any(
                    isinstance(m, annotated_types.Le | annotated_types.Lt)
                    for f in inner
                    for m in getattr(f, "metadata", [f])
                ):
                    return True
            elif bounded(arg, []):
                return True
        return False

    unbounded = sorted(
        {name for name, ann, meta in _fields(Manifest, set()) if not bounded(ann, meta)}
    )
    assert unbounded == []


# ---- a broken store is reported, not followed ------------------------------------------------


def records_file(store: Store) -> tuple[str, Path]:
    run = model_run(store)
    return run.info.run_id, local(run.info.artifact_uri) / "attacks" / "cw.parquet"


@pytest.mark.parametrize("damage", ["deleted", "truncated", "link to /etc/passwd", "folder link"])
def test_a_broken_attack_record_makes_its_run_incomplete_and_the_rest_renders(workdir, damage):
    store = Store()
    run_id, path = records_file(store)
    folder, saved = path.parent, path.read_bytes()
    aside = folder.with_name("attacks.real")
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(saved[: len(saved) // 3])
    elif damage == "link to /etc/passwd":
        path.unlink()
        path.symlink_to("/etc/passwd")
    else:
        folder.rename(aside)
        folder.symlink_to(aside)
    try:
        result = CliRunner().invoke(app, ["report", "hostile", "--out", "broken", "--format", "md"])
    finally:
        if damage == "folder link":
            folder.unlink()
            aside.rename(folder)
        else:
            path.unlink(missing_ok=True)
            path.write_bytes(saved)
    assert result.exit_code == 0, result.output
    text = (workdir / "broken" / "report.md").read_text()
    why = {"deleted": "is missing", "truncated": "is unreadable", "link to /etc/passwd": "symbolic link",
           "folder link": "symbolic link"}[damage]  # fmt: skip
    assert run_id in text and why in text
    assert "root:" not in text  # nothing of /etc/passwd


@pytest.mark.parametrize(
    "content", ["{not json", '{"experiment": {"seeds": "x"}, "conditions": 5}']
)
def test_an_invalid_stored_manifest_is_one_line(workdir, content):
    store = Store()
    exp = store.client.get_experiment_by_name("hostile")
    (parent,) = store.client.search_runs([exp.experiment_id], "tags.`suite.level` = 'condition'")
    path = local(parent.info.artifact_uri) / "manifest.resolved.json"
    saved = path.read_text()
    path.write_text(content)
    try:
        result = CliRunner().invoke(
            app, ["report", "hostile", "--out", "badjson", "--format", "md"]
        )
    finally:
        path.write_text(saved)
    one_line_error(result, parent.info.run_id, "manifest.resolved.json")


@pytest.mark.parametrize("seed", ["x", None])
def test_a_run_with_a_bad_seed_tag_is_named_and_left_out(workdir, seed):
    store = Store()
    run = model_run(store)
    if seed is None:
        store.client.delete_tag(run.info.run_id, "seed")
    else:
        store.client.set_tag(run.info.run_id, "seed", seed)
    try:
        result = CliRunner().invoke(
            app, ["report", "hostile", "--out", "badseed", "--format", "md"]
        )
    finally:
        store.client.set_tag(run.info.run_id, "seed", "0")
    assert result.exit_code == 0, result.output
    assert run.info.run_id in (workdir / "badseed" / "report.md").read_text()


def weights_file(store: Store, run) -> Path:
    logged = store.client.get_logged_model(run.data.tags["suite.model_id"])
    return local(logged.artifact_location) / "weights.pt"


def test_a_model_artifact_that_is_a_link_is_not_followed(workdir, tmp_path):
    store = Store()
    run = model_run(store)
    path = weights_file(store, run)
    real = tmp_path / "weights.pt"
    path.rename(real)
    path.symlink_to(real)
    try:
        result = CliRunner().invoke(app, ["run", "m.toml"])
    finally:
        path.unlink()
        real.rename(path)
    assert result.exit_code == 1, result.output
    assert (
        "symbolic link; not followed" in words(result.output) and "Traceback" not in result.output
    )


def test_a_stored_model_with_nan_weights_is_retrained_with_a_warning(workdir):
    store = Store()
    run = model_run(store)
    path = weights_file(store, run)
    saved = path.read_bytes()
    state = torch.load(path, weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], math.nan)
    torch.save(state, path)
    try:
        result = CliRunner().invoke(app, ["run", "m.toml"])
    finally:
        path.write_bytes(saved)
    assert result.exit_code == 0, result.output
    text = words(result.output)
    assert f"run {run.info.run_id}" in text and "not all finite" in text and "retraining" in text
    assert model_run(store).info.run_id != run.info.run_id  # a new model was trained


# ---- never a hang ----------------------------------------------------------------------------


class _Always500(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(500)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", ["black hole", "HTTP 500"])
def test_a_server_that_never_answers_or_fails_is_one_line_within_30_s(monkeypatch, server):
    if server == "black hole":  # accepts connections, never reads or answers
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port, stop = listener.getsockname()[1], listener.close
    else:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Always500)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        port = httpd.server_address[1]

        def stop():
            httpd.shutdown()
            httpd.server_close()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    try:
        for args in (["list"],) if server == "black hole" else (["list"], ["report", "x"]):
            start = time.monotonic()
            result = CliRunner().invoke(app, args)
            assert time.monotonic() - start < 30
            one_line_error(result, f"http://127.0.0.1:{port}")
    finally:
        stop()


# ---- SIGTERM is an interruption like Ctrl-C --------------------------------------------------


@pytest.mark.timeout(300)
def test_sigterm_during_training_ends_the_runs_killed_and_a_rerun_resumes(tmp_path):
    raw = tiny_manifest("term", train={"epochs": 5000}, attacks=[])  # minutes: killed long before
    (tmp_path / "m.toml").write_text(to_toml(raw))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen([SUITE, "run", "m.toml"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline, store = time.time() + 200, None
    while True:
        assert proc.poll() is None and time.time() < deadline, "training never started"
        if (tmp_path / "mlflow.db").exists():
            store = store or Store(uri, read_only=True)
            exp = store.client.get_experiment_by_name("term")
            found = (
                []
                if exp is None
                else store.client.search_runs([exp.experiment_id], "tags.role = 'model'")
            )
            if found and found[0].info.status == "RUNNING":
                break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 143, output[-2000:]
    assert "interrupted (SIGTERM)" in output and "Traceback" not in output
    runs = store.client.search_runs([exp.experiment_id])
    assert {r.info.status for r in runs} == {"KILLED"}
    raw["train"]["epochs"] = 1  # the rerun: a fresh model, trained this time to the end
    (tmp_path / "m.toml").write_text(to_toml(raw))
    again = subprocess.run([SUITE, "run", "m.toml"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=200)  # fmt: skip
    assert again.returncode == 0, again.stdout[-2000:]


# ---- download options ------------------------------------------------------------------------


class _Redirect(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):  # noqa: N802
        if self.target:
            self.send_response(302)
            self.send_header("Location", self.target)
        else:
            self.send_response(404, "[link=https://evil.example]click[/link]")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("mirror", "--mirror: 'http://[::1' is not a valid URL"),
        ("port", "is not a valid URL (Port out of range"),
        ("index", "--index-url: 'ht!tp://x' is not an http(s) URL"),
        ("source", "--source 'nope': choose one of"),
        ("redirect", "not a valid URL (Invalid IPv6 URL)"),
        ("reason", "[link=https://evil.example]click[/link]"),
    ],
)
def test_bad_download_options_are_one_line(tmp_path, how, expected):
    args = ["data", "download", "mnist", "--root", str(tmp_path / "d"), "--timeout", "10"]
    httpd = None
    if how in ("redirect", "reason"):
        handler = type("H", (_Redirect,), {"target": "http://[::1/x" if how == "redirect" else ""})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    extra = {
        "mirror": ["--source", "mirrors", "--mirror", "http://[::1"],
        "port": ["--source", "mirrors", "--mirror", "http://127.0.0.1:99999/"],
        "index": ["--source", "index", "--index-url", "ht!tp://x"],
        "source": ["--source", "nope"],
    }.get(how) or [
        "--source",
        "mirrors",
        "--mirror",
        f"http://127.0.0.1:{httpd.server_address[1]}/",
    ]
    try:
        result = CliRunner().invoke(app, args + extra)
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
    one_line_error(result, expected)
