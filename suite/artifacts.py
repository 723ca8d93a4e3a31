"""Reading an artifact a shared store holds without following it anywhere: the file must be a
regular file reached from its run's artifact folder through real folders (no symbolic link at any
step, no `..`), and of a bounded size. What breaks this is a StoreError naming the run and file."""

import os
import stat
from pathlib import Path, PurePosixPath

from suite.errors import StoreError

MAX_ARTIFACT_BYTES = 4 << 30  # far above the largest artifact the suite writes (a study's images)


def regular_file(root: Path, relpath: str, where: str) -> Path:
    """`root / relpath` if it is a regular file under `root` reached without a symbolic link
    (`root` itself included) and at most MAX_ARTIFACT_BYTES; else StoreError naming `where`."""
    rel = PurePosixPath(relpath)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise StoreError(f"{where}: artifact path {relpath!r} leaves its folder; not read")
    path = root
    for step in (None, *rel.parts):
        path = path if step is None else path / step
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise StoreError(
                f"{where}: artifact {relpath} is missing; rerun with --force to redo it"
            ) from None
        except OSError as exc:
            raise StoreError(
                f"{where}: artifact {relpath} cannot be read ({exc.strerror})"
            ) from None
        if stat.S_ISLNK(mode):
            raise StoreError(
                f"{where}: artifact {relpath}: {path} is a symbolic link; not followed "
                "(rerun with --force to redo it)"
            )
    if not stat.S_ISREG(mode):
        raise StoreError(f"{where}: artifact {relpath} is not a regular file; not read")
    size = os.lstat(path).st_size
    if size > MAX_ARTIFACT_BYTES:
        raise StoreError(
            f"{where}: artifact {relpath} holds {size:,} bytes, over the {MAX_ARTIFACT_BYTES:,} "
            "an artifact may; not read"
        )
    return path
