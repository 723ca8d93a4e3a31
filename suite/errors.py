"""Errors a user can cause. The CLI catches `SuiteError` once: one line on stderr, exit code 2."""


class SuiteError(Exception):
    """Base of every error the user can fix; its message is one line that says how."""


class ManifestError(SuiteError):
    """A manifest (or a --set override) is invalid."""


class DataError(SuiteError):
    """A data set is missing, corrupt or cannot be fetched."""


class StoreError(SuiteError):
    """The MLflow store is unreachable, empty, or lacks what was asked for."""


class TrainingError(SuiteError):
    """Training diverged (NaN/inf loss) or cannot proceed with the given settings."""
