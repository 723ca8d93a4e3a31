"""Where a report may be written: inside reports/ (or the user's --out), replacing only a folder
that an earlier `suite report` wrote. Experiment names come from a shared store, so a name is a
folder only when it is a valid manifest name and stays inside reports/."""

import os
import re
from pathlib import Path

from suite.errors import SuiteError
from suite.manifest import NAME_PATTERN

REPORTS = Path("reports")
MARKER = ".suite-report"  # written into every report folder; only such a folder is replaced


def report_dir(experiment: str, out: Path | None = None, reports: Path = REPORTS) -> Path:
    """The folder for `experiment`'s report: `out` if given, else `reports/<experiment>` when the
    name is a valid manifest name that resolves inside `reports`; SuiteError otherwise."""
    if out is not None:
        return out
    if not re.fullmatch(NAME_PATTERN, experiment) or len(experiment) > 64:
        raise SuiteError(
            f"experiment name {experiment!r} is not a safe folder name (letters, digits, '.', '_', "
            "'-'); pass --out DIR to choose the report folder"
        )
    target = reports / experiment
    if not target.resolve().is_relative_to(reports.resolve()):
        raise SuiteError(f"{target} resolves outside {reports}/; pass --out DIR")
    return target


def check_replaceable(target: Path) -> None:
    """Refuse (SuiteError) unless `target` is absent, an empty folder, or a folder holding the
    report marker: a report never replaces a user's file or folder."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise SuiteError(f"{target} exists and is not a report folder; choose another --out")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise SuiteError(
            f"{target} holds files that `suite report` did not write (no {MARKER}); "
            "choose another --out or empty it"
        )


def mark(folder: Path) -> None:
    """Give a freshly rendered report folder the marker and the mode the umask grants (a temporary
    folder is created 0700, which would hide the report from the user's group)."""
    (folder / MARKER).write_text("written by `suite report`; replaced by the next one\n")
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
