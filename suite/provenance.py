"""Which code made a result: the source files of an attack kind, and whether git says they changed
between two commits (what `suite publish` checks before pooling one attack's results)."""

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
