"""Which code made a result: the commit of the suite's source tree as the computing process saw it
(tagged on every run and result), the source files of an attack kind, and whether git says they
changed between two commits (what `suite publish` checks before pooling one attack's results)."""

import os
import subprocess
import sys
from pathlib import Path

from suite.attacks import attack_kind

_ROOT = Path(__file__).resolve().parent.parent
_SHARED = ("suite/attacks/common.py", "suite/attacks/run.py", "suite/attacks/search.py",
           "suite/attacks/rng.py", "suite/attacking.py")  # fmt: skip


def attack_sources(kind: str) -> list[str]:
    """The repository paths whose code decides what an attack of `kind` finds: its own module and
    the attack plumbing every kind shares."""
    module = sys.modules[attack_kind(kind).attack.__module__]
    own = Path(str(module.__file__)).resolve().relative_to(_ROOT).as_posix()
    return [own, *_SHARED]


def code_changed(a: str, b: str, paths: list[str]) -> bool:
    """Whether any of `paths` differs between commits `a` and `b`; True where git cannot tell
    (no checkout, an unknown commit): a result of unknown code is never pooled silently."""
    try:
        out = subprocess.run(
            ["git", "diff", "--quiet", a, b, "--", *paths],
            cwd=_ROOT,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return True
    return out.returncode != 0


def git_commit() -> str:
    """The commit of the suite's source tree: SUITE_GIT_COMMIT where set (a copy of the tree with
    no .git, e.g. on a batch machine), else git's with `-dirty` appended where files under suite/
    differ from it (the code that ran is then no commit's), or 'unknown' outside a checkout."""
    if os.environ.get("SUITE_GIT_COMMIT"):
        return os.environ["SUITE_GIT_COMMIT"][:40]
    here = Path(__file__).resolve().parent
    try:
        head, status = (
            subprocess.run(args, cwd=here, capture_output=True, text=True, timeout=5)
            for args in (
                ["git", "rev-parse", "--short=12", "HEAD"],
                ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            )
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


_PROCESS_COMMIT: list[str] = []  # the first `git_commit()` a store of this process read


def process_commit() -> str:
    """The commit of the code this process runs: `git_commit()` as it was when the process first
    opened a store, by which time the suite's modules are imported. A tree edited later, while a
    long `suite run` goes on, changes what the file system holds, not what this process runs, so
    its results keep the commit they were computed by (they were tagged `-dirty` per job)."""
    if not _PROCESS_COMMIT:
        _PROCESS_COMMIT.append(git_commit())
    return _PROCESS_COMMIT[0]
