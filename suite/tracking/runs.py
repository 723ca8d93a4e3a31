"""What the suite reads of a run: plain values, so no caller handles MLflow's entities."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StoredRun:
    """What the suite reads of one run: plain values, so no caller handles MLflow's entities."""

    run_id: str
    experiment_id: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, str]
    start_ms: int | None = None  # Unix time in ms the run started,
    end_ms: int | None = None  # and last ended (a reopened run ends again); None while it runs
    dataset_digests: tuple[str, ...] = ()  # digests of the datasets logged as the run's inputs
    metric_ms: tuple[int, ...] = ()  # when each metric's latest value was logged, sorted


@dataclass(frozen=True)
class ReusedModel:
    """A finished model read back from the store (on the CPU) with its run's metrics."""

    run_id: str
    model: torch.nn.Module
    metrics: dict[str, float]


def _stored(run) -> StoredRun:
    return StoredRun(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        tags=dict(run.data.tags),
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        start_ms=run.info.start_time,
        end_ms=run.info.end_time,
        dataset_digests=tuple(
            d.dataset.digest for d in (run.inputs.dataset_inputs if run.inputs else [])
        ),
        metric_ms=tuple(sorted({m.timestamp for m in getattr(run.data, "_metric_objs", [])})),
    )
