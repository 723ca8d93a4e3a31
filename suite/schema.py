"""The store's schema: every tag, metric and artifact name the pipeline writes and the report reads.

Writer (`suite.tracking`, `suite.conditions`, `suite.attacking`, `suite.runner`) and reader
(`suite.report.collect`, `suite list`) both spell names through this module, so renaming one here
renames both sides; tests/test_schema.py writes a run through the pipeline and reads every name
back. Layout: one MLflow experiment per manifest, a parent run per condition (tag LEVEL =
LEVEL_CONDITION, holding MANIFEST), a child run per seed and role (the models), a REPORT run per
rendered report.
"""

from enum import StrEnum

# ---- tags ------------------------------------------------------------------------------------

LEVEL = "suite.level"  # on parent runs: LEVEL_CONDITION; on report runs: LEVEL_REPORT
LEVEL_CONDITION = "condition"
LEVEL_REPORT = "report"
ERROR = "suite.error"  # why a run ended FAILED
MODEL_ID = "suite.model_id"  # the LoggedModel holding a run's weights
PID = "suite.pid"  # the process holding a RUNNING run, and its host (to reap a dead holder)
HOST = "suite.host"
VERSION = "suite_version"
COMMIT = "git_commit"
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own tag of a nested run
RUN_NAME = "mlflow.runName"


class Status(StrEnum):
    """An MLflow run's status as the store writes and reads it (a str: it compares equal to
    MLflow's own strings)."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


CONDITION = "condition"
KIND = "kind"
SEED = "seed"
ROLE = "role"  # "model", or a defensive condition's "teacher" / "student"
CONFIG_HASH = "config_hash"
DATA_DIGEST = (
    "data_digest"  # the content digest of the data a run was made on (`DataSplits.digest`)
)
STUDENT_CONFIG_HASH = "student_config_hash"  # on a teacher: the config hash of its student

TEACHER_RUN_ID = "teacher_run_id"  # on a student: the run of the model it learned from
TEACHER_CONDITION = "teacher_condition"  # on an ARD student: the condition of its teacher
SET_HASH = (
    "set_hash"  # on a synthetic model run: its synthetic set's identity, once the set is stored
)
SET_FROM = "set_from_run"  # on a synthetic model run whose set was reused: the run that made it
SYNTHETIC_SET = "synthetic/set.npz"  # the set: x [n, 1, 28, 28] in [0, 1], y, and dd's lrs

ROLE_MODEL = "model"  # the one model of a condition
ROLE_TEACHER = "teacher"  # a distillation's teacher and student
ROLE_STUDENT = "student"
ATTACKED_ROLES = (ROLE_MODEL, ROLE_STUDENT)  # the roles that are a condition's model under attack

# ---- metrics ---------------------------------------------------------------------------------

FINAL_VAL_ACC = "final_val_acc"
FINAL_TEST_ACC = "final_test_acc"
TRAIN_SECONDS = "train_seconds"
# one value per time a run was open and finished: its seconds, stamped (and stepped) at its start
OPEN_SECONDS = "open_seconds"
CURVE_METRICS = ("val_acc", "test_acc", "train_loss", "train_acc")  # per-epoch histories

ATTACK = "attack"  # results of attack NAME: metrics `attack.NAME.*`, tag `attack.NAME.config_hash`
MASKING = (
    "masking"  # the gradient-masking diagnostic: metrics `masking.*`, tag `masking.config_hash`
)
VERIFY = (
    "verify"  # results of verification NAME: metrics `verify.NAME.*`, tag `verify.NAME.config_hash`
)
MASKING_METRICS = ("saturated_fraction", "softmax_success", "cw_success", "cw_median_l2", "flagged")


def attack_result(name: str) -> str:
    """The result name (metric prefix and cache tag stem) of attack `name` on a model run."""
    return f"{ATTACK}.{name}"


def verify_result(name: str) -> str:
    """The result name (metric prefix and cache tag stem) of verification `name` on a model run."""
    return f"{VERIFY}.{name}"


def result_tag(result: str) -> str:
    """The tag holding the config hash of a cached result (`attack.NAME`, `masking`)."""
    return f"{result}.config_hash"


def result_commit(result: str) -> str:
    """The tag holding the commit of the code that computed a cached result."""
    return f"{result}.commit"


def result_metric(result: str, key: str) -> str:
    """The metric `key` of a cached result, in MLflow-safe spelling (`metric_key`)."""
    return f"{result}.{metric_key(key)}"


def metric_key(key: str) -> str:
    """`success_rate@eps=0.1` → `success_rate.eps_0.1` (MLflow refuses '@' and '=' in names)."""
    return key.replace("@eps=", ".eps_")


# ---- artifacts -------------------------------------------------------------------------------

MANIFEST = "manifest.resolved.json"  # on each parent run: the resolved manifest, as JSON
MANIFEST_AT = "suite.manifest_ns"  # on each parent run: when `suite run` last logged MANIFEST there
REPORT_FOLDER = "report"
GRADIENT_NORMS = "masking/gradient_norms.parquet"
WEIGHTS = "weights.pt"  # a LoggedModel's state_dict file


def attack_records(name: str) -> str:
    """Per-sample records of attack `name` (one row per attacked sample or (sample, target))."""
    return f"attacks/{name}.parquet"


def verify_records(name: str) -> str:
    """Per-digit records of verification `name` (`suite.verify.kinds.RECORD_COLUMNS`)."""
    return f"verify/{name}.parquet"


def attack_images(name: str) -> str:
    """Adversarial images of attack `name` (`sample_index`, `x_adv`), read by transfer attacks."""
    return f"attacks/{name}.adv.npz"


def attack_examples(name: str) -> str:
    """[k, 3, 28, 28] clean / adversarial / perturbation of the first attacked rows."""
    return f"attacks/{name}.examples.npy"


def attack_picture(name: str) -> str:
    """A PNG of the first successful adversarials of attack `name`."""
    return f"attacks/{name}.png"


def checkpoint_folder(name: str, config_hash: str, batch: int) -> str:
    """Where an attack saves each finished batch (`NNNNNNN.parquet/.npy`), so an interrupted attack
    resumes from the batches it finished."""
    return f"checkpoints/{name}-{config_hash}-b{batch}"
