"""A model run's cached results (an attack's, a verification's, the masking diagnostic's): read
back by config hash, computed once per store otherwise."""

from collections.abc import Callable

from suite.job import Context, ModelRun
from suite.schema import Status


def cached_result(
    ctx: Context, run: ModelRun, result: str, cfg: str, compute: Callable[[], dict[str, float]]
) -> dict[str, float]:
    """Metrics of `result` (`attack.NAME`, `verify.NAME`, `masking`) on `run`: read back when they
    were saved with config hash `cfg` (`Store.cached_result`), else computed inside the re-opened
    run and saved — an interrupted result is redone, a finished one never is, and a concurrent run
    on the same store waits for it (`Store.claim`) instead of computing it again. Keys are the
    saved (MLflow-safe) names either way."""
    store = ctx.store

    def cached() -> dict[str, float] | None:
        return None if ctx.force else store.cached_result(run.run_id, result, cfg)

    def waiting(holder: str) -> None:
        ctx.progress.log(
            f"{run.condition} seed {run.seed}: {holder} is computing {result}; waiting"
        )

    with store.claim(f"result/{run.run_id}/{result}/{cfg}", waiting):  # computed once per store
        hit = cached()
        if hit is not None:
            return hit
        with store.active(run.run_id, interrupted=Status.FINISHED):  # the model stays reusable
            return store.save_result(run.run_id, result, cfg, compute())
