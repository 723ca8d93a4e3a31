"""What a user sees in `suite ui`: headless-Chromium screenshots of the MLflow UI over a fresh tiny
experiment, opened at the URL `suite ui` prints (issues 13 and 31: it opens on the experiment's
training runs, the collapsed condition rows show test accuracy and the attack's median L2, and the
runs table shows each run's Dataset and Models).

Needs Debian's `chromium` (`apt-get install -y chromium`). Trains the tiny net for one epoch on
mnist-5k into a temporary store (about a minute on 2 cores), serves it with `suite ui`, and writes
`experiment.png` (the experiment's landing page) and `run.png` (one model run) into --out. Prints
JSON: the experiment-kind tag, the run's dataset input and logged model, and the PNG paths. Look at
the PNGs: the landing page must be the runs table (not the GenAI "Traces" overview) with the
Dataset and Models columns filled.

    python bench/ui_screenshot.py --out /tmp/ui-shots
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from suite.endpoints import UI_WORKFLOW  # noqa: E402
from suite.manifest import validate_manifest  # noqa: E402
from suite.runner import run_manifest  # noqa: E402
from suite.tracking import Store  # noqa: E402

MANIFEST = {
    "experiment": {"name": "ui-shot", "seeds": [0], "device": "cpu"},
    "data": {"dataset": "mnist-5k", "train_samples": 1000, "val_samples": 200, "attack_samples": 8},
    "model": {"arch": "tiny"},
    "train": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "dropout": 0.0},
    "conditions": [{"name": "base", "kind": "standard"}],
    "attacks": [{"name": "cw", "kind": "cw-l2", "params": {"binary_steps": 2, "max_iterations": 20}}],
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"suite ui did not answer on {url}") from None
            time.sleep(1)


def screenshot(browser: str, url: str, out: Path) -> None:
    """A 2600×900 PNG of `url` (wide enough for the metric columns beside the MLflow Assistant
    panel) after the single-page app had 20 s of virtual time to load."""
    subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=2600,900", "--virtual-time-budget=20000", f"--screenshot={out}", url,
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("ui-shots"))
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs chromium: apt-get install -y chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        store = Store()
        run_manifest(validate_manifest(MANIFEST, "bench"), store=store)
        exp = store.client.get_experiment_by_name("ui-shot")
        run = next(
            r
            for r in store.client.search_runs([exp.experiment_id])
            if r.data.tags.get("role") == "model"
        )
        port = free_port()
        suite = Path(sys.executable).parent / "suite"
        proc = subprocess.Popen(
            [str(suite), "ui", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            printed = proc.stdout.readline()  # "MLflow UI for 'ui-shot' on URL  (store …)"
            url = next(w for w in printed.split() if w.startswith(base))
            wait_for(f"{base}/health", proc)
            shots = {
                "experiment": url,  # what `suite ui` printed
                "run": f"{base}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}?{UI_WORKFLOW}",
            }
            for name, shot in shots.items():
                screenshot(browser, shot, args.out / f"{name}.png")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # mlflow server has worker children
            proc.wait(timeout=30)
    dataset = run.inputs.dataset_inputs[0].dataset
    print(
        json.dumps(
            {
                "printed_url": url,
                "experiment_kind": exp.tags.get("mlflow.experimentKind"),
                "dataset": {
                    "name": dataset.name,
                    "digest": dataset.digest,
                    "profile": dataset.profile,
                },
                "models": [m.model_id for m in run.outputs.model_outputs],
                "screenshots": {name: str(args.out / f"{name}.png") for name in shots},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
