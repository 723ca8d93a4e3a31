"""Where a report may be written: inside reports/ (or the user's --out), into a folder that is new,
empty, or one an earlier `suite report` wrote. Such a folder's marker lists the files the suite
wrote there; the next report replaces exactly those and keeps every other file (a user's notes,
drafts). Experiment names come from a shared store, so a name is a folder only when it is a valid
manifest name and stays inside reports/."""

import os
import re
import shutil
import tempfile
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


MARKER_HEADER = "written by `suite report`; the next one replaces these files and keeps all others:"
# what a report wrote before its marker listed its files: these it may replace, nothing else
LEGACY_WRITTEN = re.compile(r"report\.(md|pdf)|README\.md|(figures|tables)/[^/]+\.(png|csv)")


def mark(folder: Path, files: list[str]) -> None:
    """Give a freshly rendered report folder the marker listing `files` (relative POSIX paths the
    suite wrote) and the mode the umask grants (a temporary folder is created 0700, which would hide
    the report from the user's group)."""
    _write_marker(folder, set(files))
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def add_written(folder: Path, files: list[str]) -> None:
    """List `files` (written into a report folder after it was rendered, e.g. a study's README) in
    its marker, so the next report replaces them rather than keeping them as the user's."""
    _write_marker(folder, (written_by_suite(folder) or set()) | set(files))


def _write_marker(folder: Path, files: set[str]) -> None:
    (folder / MARKER).write_text("\n".join([MARKER_HEADER, *sorted(files)]) + "\n")


def written_by_suite(folder: Path) -> set[str] | None:
    """The files the marker of `folder` lists, or None for a marker from before it listed them."""
    lines = (folder / MARKER).read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0] != MARKER_HEADER:
        return None
    return {line for line in lines[1:] if line}


def swap_in(new: Path, target: Path) -> list[str]:
    """Move the rendered folder `new` to `target`, carrying over every file and folder of an
    earlier `target` that its marker does not list as the suite's (checked by `check_replaceable`
    beforehand). Returns the relative paths kept. Refuses (SuiteError, nothing changed) when a kept
    file sits where the new report writes one."""
    if not target.exists():
        new.rename(target)
        return []
    listed = written_by_suite(target) if (target / MARKER).is_file() else set()
    entries = _entries(target)
    if listed is None:
        listed = {rel for rel in entries if LEGACY_WRITTEN.fullmatch(rel)}
    kept: list[str] = []
    for rel in entries:
        if rel == MARKER or rel in listed or any(rel.startswith(k + "/") for k in kept):
            continue
        path = target / rel
        if path.is_dir() and not path.is_symlink() and any(f.startswith(rel + "/") for f in listed):
            continue  # a folder the suite writes into: what else it holds is looked at one by one
        kept.append(rel)
    clash = [rel for rel in kept if os.path.lexists(new / rel)]
    if clash:
        raise SuiteError(
            f"{target / clash[0]} was not written by `suite report`, but the new report writes "
            "there; move it elsewhere and rerun"
        )
    for rel in kept:
        (new / rel).parent.mkdir(parents=True, exist_ok=True)
        os.rename(target / rel, new / rel)
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    old.rmdir()
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old)
    return kept


def _entries(folder: Path) -> list[str]:
    """Relative POSIX paths of every file, link and folder under `folder`, parents first; symlinks
    are entries, never followed."""
    out = []
    for root, dirs, files in os.walk(folder):
        base = Path(root).relative_to(folder)
        for name in sorted(dirs) + sorted(files):
            out.append((base / name).as_posix())
    return out
