"""The MLflow store: where runs, models, metrics and per-sample attack records live; the only
package that talks to MLflow. `store` opens it and holds the runs (`Store`), `lifecycle` keeps a
run's status true (runs never stay RUNNING: an interrupt ends them KILLED, an exception FAILED
with the reason as a tag), `files` reads and writes artifacts and model weights, `runs` is what
the rest of the suite reads of a run. Layout and names: `suite.schema`; what may be reused:
`suite.cache`."""

import logging
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault(
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
)  # its tqdm bars broke one-line errors
# every request to a tracking server has a deadline: 30 s per try, one retry (MLflow's defaults, 120 s
# and 7 retries with backoff, keep a command waiting on a dead server for many minutes)
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
# MLflow prints "View run … at: URL" with the tracking URI's password in it on every run's end
os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


from suite.tracking.runs import ReusedModel, StoredRun  # noqa: E402
from suite.tracking.store import Store, end_active_run, schema_head  # noqa: E402

# after MLflow's import, which configures its own loggers
logging.getLogger("mlflow").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.ERROR)

__all__ = ["ReusedModel", "Store", "StoredRun", "end_active_run", "schema_head"]
