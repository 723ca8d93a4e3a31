"""Fan the jobs of a manifest out over Ray (the `suite[ray]` extra): a local Ray on this machine,
or an existing cluster with `--address`. Every worker calls the same `run_job` as the local executor
and logs to the same tracking URI, so the results are those of a local run."""

from suite.errors import SuiteError
from suite.progress import Progress
from suite.runner import Executor, Job, Row, failed_row, log_finished, run_job


def ray_executor(
    address: str | None = None, gpus_per_job: float = 0.0, num_cpus: int | None = None
) -> Executor:
    """An executor on Ray; without `address` it starts (and stops) a local Ray of `num_cpus` CPUs."""
    try:
        import ray
    except ImportError:
        raise SuiteError(
            "--executor ray needs Ray: pip install 'suite[ray]' (or -c constraints.txt -e '.[ray]')"
        ) from None

    def execute(
        jobs: list[Job], uri: str, experiment_id: str, parents: dict[str, str], progress: Progress
    ) -> list[list[Row]]:
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(
                address=address,
                num_cpus=None if address else num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_job, max_retries=0)(run_job)
        refs = [remote.remote(job, uri, experiment_id, parents[job.condition]) for job in jobs]
        position = {ref: i for i, ref in enumerate(refs)}
        results: dict[int, list[Row]] = {}
        task = progress.task(f"{len(jobs)} jobs on Ray", total=len(jobs))
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                i = position[done[0]]
                try:
                    results[i] = ray.get(done[0])
                except Exception as exc:  # a worker's bug or crash: report it, let the rest finish
                    results[i] = [failed_row(jobs[i], exc)]
                log_finished(progress, jobs[i], results[i], len(results))
                task.update(len(results))
        finally:
            task.close()
            if started_here:
                ray.shutdown()
        return [results[i] for i in range(len(jobs))]

    return execute
