"""The progress interface long-running code reports through; console.py implements it with rich."""

from typing import Protocol


class Task(Protocol):
    def update(self, completed: float, total: float | None = None, **info: object) -> None:
        """Set how much is done (and optionally the total and extra fields like the loss)."""

    def close(self) -> None:
        """Remove the bar once the work is done."""


class Progress(Protocol):
    def task(self, description: str, total: float | None) -> Task:
        """Start a bar for one unit of work."""

    def log(self, message: str) -> None:
        """Print one line above the bars."""


class _NullTask:
    def update(self, completed: float, total: float | None = None, **info: object) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    """Progress that shows nothing: for tests and library use."""

    def task(self, description: str, total: float | None) -> Task:
        return _NullTask()

    def log(self, message: str) -> None:
        pass
