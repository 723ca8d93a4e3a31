"""Artifacts in and out of the store: tables (Parquet), arrays (`.npy`, `.npz`), JSON, text and
model weights, each read only as a regular file inside its run's artifact folder, never unpickled,
and refused in one line naming the run and the file when it is not what it claims to be."""

import json
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import mlflow
import mlflow.artifacts
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput

from suite import schema
from suite.artifacts import regular_file
from suite.errors import StoreError
from suite.tracking.runs import StoredRun
from suite.weights import load_weights, save_weights


class ArtifactFiles:
    """The artifact half of `Store` (it needs the store's `client`, `uri`, `shown`, `get` and
    `_artifact_home`)."""

    client: MlflowClient
    uri: str
    shown: str

    def load_json(self, run_id: str, relpath: str) -> object:
        return self._read(run_id, relpath, lambda p: json.loads(p.read_text(encoding="utf-8")))

    def load_npy(self, run_id: str, relpath: str) -> np.ndarray:
        """A `.npy` artifact; object arrays are refused (unpickling runs code)."""
        return self._read(run_id, relpath, lambda p: np.load(p, allow_pickle=False))

    def _read(self, run_id: str, relpath: str, parse: Callable[[Path], Any]) -> Any:
        """`parse(path)` of artifact `relpath` of run `run_id`, read only as a regular file inside
        the run's artifact folder (`_fetched`); a missing, linked or unparsable artifact is a
        StoreError naming the run and the file, never a traceback."""
        artifact_uri, where = self.client.get_run(run_id).info.artifact_uri, f"run {run_id}"
        with self._fetched(artifact_uri, relpath, where) as path:
            try:
                return parse(path)
            except Exception as exc:  # untrusted bytes: any parser failure is the file's fault
                reason = str(exc).splitlines()[0][:160] if str(exc) else ""
                raise StoreError(
                    f"{where}: artifact {relpath} is unreadable ({type(exc).__name__}"
                    f"{': ' + reason if reason else ''}); rerun with --force to redo it"
                ) from None

    @contextmanager
    def _fetched(self, artifact_uri: str, relpath: str, where: str) -> Iterator[Path]:
        """A local regular file holding artifact `relpath` of the folder `artifact_uri`: read in
        place on a local store (`artifacts.regular_file`: no link followed), else downloaded from
        the server into a temporary folder and checked there."""
        parts = urllib.parse.urlsplit(artifact_uri)
        if parts.scheme == "file":
            yield regular_file(Path(urllib.parse.unquote(parts.path)), relpath, where)
            return
        with tempfile.TemporaryDirectory() as tmp:
            try:
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{artifact_uri.rstrip('/')}/{relpath}",
                    dst_path=tmp,
                    tracking_uri=self.uri,
                )
            except Exception as exc:  # the server lost it, or refuses it
                raise StoreError(
                    f"{where}: artifact {relpath} cannot be fetched ({type(exc).__name__}); "
                    "rerun with --force to redo it"
                ) from None
            yield regular_file(Path(tmp), PurePosixPath(relpath).name, where)

    def log_artifact_bytes(self, run_id: str, relpath: str, write) -> None:
        """Write an artifact through `write(path)` into a temp dir and upload it under `relpath`."""
        rel = Path(relpath)
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / rel.name
            write(target)
            self.client.log_artifact(
                run_id, str(target), str(rel.parent) if rel.parent.parts else None
            )

    def log_table(self, run_id: str, relpath: str, frame: pd.DataFrame) -> None:
        self.log_artifact_bytes(run_id, relpath, lambda p: frame.to_parquet(p, index=False))

    def load_table(self, run_id: str, relpath: str) -> pd.DataFrame:
        return self._read(run_id, relpath, pd.read_parquet)

    def log_arrays(self, run_id: str, relpath: str, arrays: dict[str, np.ndarray]) -> None:
        """Arrays as one compressed `.npz` artifact (np.savez_compressed: exact values)."""
        self.log_artifact_bytes(run_id, relpath, lambda p: np.savez_compressed(p, **arrays))

    def load_arrays(self, run_id: str, relpath: str) -> dict[str, np.ndarray]:
        """The arrays of a `.npz` artifact; object arrays are refused (unpickling runs code)."""

        def parse(path: Path) -> dict[str, np.ndarray]:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}

        return self._read(run_id, relpath, parse)

    def log_text(self, run_id: str, relpath: str, text: str) -> None:
        self.log_artifact_bytes(run_id, relpath, lambda p: p.write_text(text, encoding="utf-8"))

    def log_model(self, run_id: str, model: torch.nn.Module, arch: str, dropout: float) -> str:
        """Log `model` as weights only (a `state_dict` file, no pickled code) in an MLflow
        LoggedModel whose params name the architecture; the run lists it as its output model.
        Returns the model id, also kept in the run's schema.MODEL_ID."""
        experiment_id = self.client.get_run(run_id).info.experiment_id
        logged = self.client.create_logged_model(
            experiment_id,
            name="model",
            source_run_id=run_id,
            params={"arch": arch, "dropout": repr(float(dropout))},
            model_type="pytorch-state-dict",
        )
        with tempfile.TemporaryDirectory() as tmp:
            save_weights(model, Path(tmp) / schema.WEIGHTS)
            self.client.log_model_artifacts(logged.model_id, tmp)
        self.client.finalize_logged_model(logged.model_id, "READY")
        self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, 0)])
        self.client.set_tag(run_id, schema.MODEL_ID, logged.model_id)
        return logged.model_id

    def load_model(self, run_id: str) -> torch.nn.Module:
        """The model of run `run_id`, rebuilt with `build_model` and filled with its logged weights
        (read with `weights_only=True`: nothing in the store can run code here), in eval mode on the
        CPU. Raises StoreError naming the run when the logged model is not its own plain weights."""
        return self.load_model_of(self.get(run_id))

    def load_model_of(self, run: StoredRun) -> torch.nn.Module:
        """`load_model` of a run already read (its tags name the model)."""
        run_id, model_id = run.run_id, run.tags.get(schema.MODEL_ID, "")
        where = f"run {run_id} in {self.shown}"
        try:
            logged = self.client.get_logged_model(model_id)
        except Exception:  # a missing or malformed id: the run was not logged by the suite
            raise StoreError(
                f"{where}: its model {model_id!r} does not exist; rerun with --force"
            ) from None
        own = f"{self._artifact_home(run.experiment_id)}/models/{model_id}/artifacts"
        if logged.source_run_id != run_id or logged.artifact_location.rstrip("/") != own:
            raise StoreError(f"{where}: its model {model_id} belongs elsewhere; rerun with --force")
        arch, dropout = logged.params.get("arch"), logged.params.get("dropout", "")
        with self._fetched(logged.artifact_location, schema.WEIGHTS, where) as path:
            return load_weights(path, arch, dropout, where)
