"""A run's status kept true: the active run ends FINISHED, KILLED on Ctrl-C or SIGTERM, FAILED
with the reason as a tag on an exception, and background (parent) runs are held RUNNING while
their jobs work."""

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import mlflow.artifacts
from mlflow import MlflowClient

from suite import schema
from suite.redact import redact
from suite.schema import Status


class RunLifecycle:
    """The run-status half of `Store` (it needs the store's `client` and `set_tags`)."""

    client: MlflowClient

    @contextmanager
    def active(self, run_id: str, interrupted: str = Status.KILLED) -> Iterator[str]:
        """Make `run_id` the active (RUNNING) run; end it FINISHED, `interrupted` on Ctrl-C (a
        finished run reopened to add results passes FINISHED: what it held still stands), FAILED
        on error. Each time it was open and finished is logged (`schema.OPEN_SECONDS`), so a run
        reopened days later does not count the days between as compute (nor, as before, work an
        interruption lost)."""
        opened = time.time()
        try:
            mlflow.start_run(run_id=run_id)
            self._claim(run_id)
            yield run_id
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM, even while the run was being opened
            self._end(run_id, interrupted)
            raise
        except BaseException as exc:
            self.client.set_tag(run_id, schema.ERROR, redact(f"{type(exc).__name__}: {exc}")[:4000])
            self._end(run_id, Status.FAILED)
            raise
        self._log_open(run_id, opened)
        mlflow.end_run(Status.FINISHED)

    def _log_open(self, run_id: str, opened: float) -> None:
        """The seconds since `opened` as one value of OPEN_SECONDS, stamped at `opened`."""
        start_ms = int(opened * 1000)
        self.client.log_metric(
            run_id, schema.OPEN_SECONDS, time.time() - opened, timestamp=start_ms, step=start_ms
        )

    def _end(self, run_id: str, status: str) -> None:
        """End `run_id` with `status`: as MLflow's active run where it is one (else MLflow's exit
        hook would end it FINISHED), else through the client."""
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status)
        else:
            self.client.set_terminated(run_id, status)

    @contextmanager
    def scope(self, run_ids: list[str]) -> Iterator[dict[str, str]]:
        """Hold background runs (conditions' parent runs) RUNNING while the body works; then end
        each with the status the body put in the yielded dict (default FINISHED), or all KILLED on
        Ctrl-C, FAILED on an exception."""
        for run_id in run_ids:
            self.client.update_run(run_id, status=Status.RUNNING)
            self._claim(run_id)
        outcome: dict[str, str] = {}
        try:
            yield outcome
        except KeyboardInterrupt:
            self._end_all(run_ids, Status.KILLED)
            raise
        except BaseException as exc:
            for run_id in run_ids:
                self.client.set_tag(
                    run_id, schema.ERROR, redact(f"{type(exc).__name__}: {exc}")[:4000]
                )
            self._end_all(run_ids, Status.FAILED)
            raise
        for run_id in run_ids:
            self.client.set_terminated(run_id, outcome.get(run_id, Status.FINISHED))

    def _end_all(self, run_ids: list[str], status: str) -> None:
        for run_id in run_ids:
            self.client.set_terminated(run_id, status)

    def _claim(self, run_id: str) -> None:
        """Record which process holds the run, so a later run can tell a dead holder (reap_stale)."""
        self.set_tags(run_id, {schema.PID: str(os.getpid()), schema.HOST: socket.gethostname()})
