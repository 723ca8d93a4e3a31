"""The SQLite file behind a local MLflow store: complete, or created atomically. What the file
holds is read here with `sqlite3` alone, never changed; MLflow's own schema and migrations stay in
`suite.tracking`, which passes them in."""

import fcntl
import hashlib
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from suite.errors import StoreError

SQLITE_HEADER = b"SQLite format 3\x00"
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs"})


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None (a server, another database)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@dataclass(frozen=True)
class SqliteState:
    """What a SQLite store file holds: `state` is one of absent, empty (0 bytes), foreign (not a
    SQLite file), blank (SQLite without tables), other (tables that are not MLflow's), partial
    (MLflow's tables, schema not at this MLflow's head: half-created or older) or complete."""

    state: str
    runs: int = 0
    detail: str = ""


def inspect_sqlite(db: Path, head: str) -> SqliteState:
    """Read `db` without changing it (opened read-only, never created); `head` is the schema
    revision this MLflow creates."""
    if not db.exists():
        return SqliteState("absent")
    if not db.is_file():
        return SqliteState("foreign", detail="not a regular file")
    with db.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if not header:
        return SqliteState("empty")
    if header != SQLITE_HEADER:
        return SqliteState("foreign", detail="not a SQLite database")
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {
                r[0] for r in con.execute("select name from sqlite_master where type='table'")
            }
            if not tables:
                return SqliteState("blank")
            if not tables & MLFLOW_TABLES:
                return SqliteState("other", detail=f"tables {', '.join(sorted(tables)[:5])}")
            runs = con.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
            version = (
                con.execute("select version_num from alembic_version").fetchone()
                if "alembic_version" in tables
                else None
            )
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return SqliteState("foreign", detail=f"unreadable SQLite ({exc})")
    if tables >= MLFLOW_TABLES and version is not None and version[0] == head:
        return SqliteState("complete", runs)
    found = "no schema version" if version is None else f"schema {version[0]}"
    return SqliteState("partial", runs, f"{found}, this MLflow needs {head}")


def check_complete(db: Path, shown: str, head: str) -> None:
    """StoreError unless `db` is a complete MLflow store (what a read-only command may open)."""
    found = inspect_sqlite(db, head)
    if found.state == "complete":
        return
    why = {
        "absent": f"{db} does not exist",
        "empty": f"{db} is an empty file",
        "foreign": f"{db} is {found.detail}",
        "blank": f"{db} is a SQLite database with no tables",
        "other": f"{db} holds {found.detail}, not MLflow's",
        "partial": f"{db} is a half-created or older MLflow store ({found.detail})",
    }[found.state]
    fix = (
        "`suite run FILE` rebuilds a half-created store that holds no runs; an older one with runs "
        f"needs `mlflow db upgrade {shown}` after a backup"
        if found.state == "partial"
        else "check MLFLOW_TRACKING_URI or run `suite run FILE` first"
    )
    raise StoreError(f"no MLflow store at {shown} ({why}; left as it is); {fix}")


def ensure_sqlite_store(
    db: Path, shown: str, head: str, create: Callable[[Path], None]
) -> list[str]:
    """Make `db` a complete MLflow store for writing (the caller holds the creation lock) and return
    what was done worth a line. A new store is created in a temporary file and renamed into place,
    so a crash at any moment leaves either no store or a complete one; an empty file or a table-less
    database is replaced; a half-created store with no runs is moved aside and rebuilt; a file that
    is not an MLflow store, or an older one with runs, is refused. `create(path)` makes a
    complete store at `path` (MLflow's migrations: the tracking module's)."""
    found = inspect_sqlite(db, head)
    if found.state == "complete":
        return []
    if found.state in ("foreign", "other"):
        raise StoreError(
            f"{db} is {found.detail if found.state == 'foreign' else 'a database with ' + found.detail}"
            f", not an MLflow store; left as it is; point MLFLOW_TRACKING_URI ({shown}) elsewhere"
        )
    if found.state == "partial" and found.runs:
        raise StoreError(
            f"MLflow store {shown} holds {found.runs} runs but its schema is not this MLflow's "
            f"({found.detail}); back it up, then run `mlflow db upgrade {shown}`"
        )
    notes = []
    if found.state == "partial":
        aside = db.with_name(f"{db.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(db, aside)
        notes.append(
            f"{db} was a half-created MLflow store with no runs ({found.detail}); moved it to "
            f"{aside.name} and created a new one"
        )
    create(db)
    return notes


@contextmanager
def creation_lock(db: Path) -> Iterator[None]:
    """Serialise first contact with a SQLite store across processes: two processes creating the
    tables of a new database at once race (mlflow#4123). Read-only callers take no lock (it would
    be a file written beside the database)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def file_claim(
    folder: Path, key: str, waiting: Callable[[str], None] | None = None, *, block: bool = True
) -> Iterator[bool]:
    """Hold an exclusive lock on `key`'s file under `folder` while the body runs (the kernel drops
    it when its holder dies, `kill -9` included); `waiting(holder)` is called once if another
    process holds it, and the body then runs after it, so it finds the work made. With `block`
    false the body runs at once, given False, where another process holds it (True: held here)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not block:
                yield False
                return
            handle.seek(0)
            holder = handle.read(200).strip() or "another process"
            if waiting is not None:
                waiting(holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
