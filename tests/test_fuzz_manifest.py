"""Malformed manifests (issues 13 and 28): mutations of manifests/quick.toml — values of the wrong
type (rich markup and mathtext among them), unknown keys, deleted keys and tables, non-UTF-8 and
binary bytes, values nested thousands deep, absurd counts — each make `suite validate` exit 0, or
exit 2 with at most 3 lines that name the file; never a traceback. In-process (Typer's
CliRunner), seeded, so the 200 cases cost seconds."""

import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suite.cli import app

QUICK = (Path(__file__).resolve().parents[1] / "manifests" / "quick.toml").read_bytes()
KEY_LINE = re.compile(rb"^([A-Za-z_]+) = (.*)$", re.M)
VALUES = [
    b'"text"', b"0", b"-1", b"-9999999999999999999", b"1e308", b"nan", b"inf", b"true",
    b"[]", b"[1, 2]", b'["a", 1]', b"{}", b"{ a = 1 }", b"1979-05-27", b'""', b"0.5",
    b'"../../etc/passwd"', b'"![x](/tmp/x.png)"', b"4294967296", b"[[1]]",
    b'"[/x]"', b'"[bold]"', b'"[link=file:///etc/passwd]x[/link]"', b'"$\\frac{$"',
    b"1180591620717411303424", b"1e400",
]  # fmt: skip
CASES = 200


def wrong_type(text: bytes, rng: random.Random) -> bytes:
    """One `key = value` line gets a value of another type (or out of range)."""
    match = rng.choice(list(KEY_LINE.finditer(text)))
    line = match.group(1) + b" = " + rng.choice(VALUES)
    return text[: match.start()] + line + text[match.end() :]


def unknown_key(text: bytes, rng: random.Random) -> bytes:
    """A key no table knows, after a random key line (so inside that line's table)."""
    match = rng.choice(list(KEY_LINE.finditer(text)))
    name = rng.choice([b"epochz", b"extra", b"kind2", b"seed", b"__class__", b"params"])
    return text[: match.end()] + b"\n" + name + b" = " + rng.choice(VALUES) + text[match.end() :]


def deletion(text: bytes, rng: random.Random) -> bytes:
    """A key line, or a whole table (its header and keys), removed."""
    if rng.random() < 0.5:
        match = rng.choice(list(KEY_LINE.finditer(text)))
        return text[: match.start()] + text[match.end() :]
    blocks = re.split(rb"(?m)^(?=\[)", text)
    del blocks[rng.randrange(1, len(blocks))]
    return b"".join(blocks)


def non_utf8(text: bytes, rng: random.Random) -> bytes:
    """Latin-1, UTF-16 or stray high bytes where UTF-8 is expected."""
    choice = rng.randrange(3)
    if choice == 0:
        return text.decode().replace('"quick"', '"qu\xefck"').encode("latin-1", "replace")
    if choice == 1:
        return text.decode().encode("utf-16")
    at = rng.randrange(len(text))
    return text[:at] + bytes([rng.randrange(0x80, 0x100)]) + text[at:]


def binary(text: bytes, rng: random.Random) -> bytes:
    """Random bytes (NUL included) inserted, overwritten, or the file truncated."""
    at = rng.randrange(len(text))
    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    choice = rng.randrange(3)
    if choice == 0:
        return text[:at] + junk + text[at:]
    if choice == 1:
        return text[:at] + junk + text[at + len(junk) :]
    return text[:at]


def deep(text: bytes, rng: random.Random) -> bytes:
    """A value nested hundreds to thousands of arrays or inline tables deep."""
    match = rng.choice(list(KEY_LINE.finditer(text)))
    n = rng.randrange(17, 3000)
    value = b"[" * n + b"1" + b"]" * n if rng.random() < 0.5 else b"{a = " * n + b"1" + b"}" * n
    return text[: match.start()] + match.group(1) + b" = " + value + text[match.end() :]


def huge(text: bytes, rng: random.Random) -> bytes:
    """A count far beyond what any run can do (an epoch, step or sample count of 2**70 or so)."""
    match = rng.choice([m for m in KEY_LINE.finditer(text) if m.group(2).isdigit()])
    value = str(rng.choice([2**31, 2**62, 2**70, 10**12])).encode()
    return text[: match.start()] + match.group(1) + b" = " + value + text[match.end() :]


MUTATIONS = [wrong_type, unknown_key, deletion, non_utf8, binary, deep, huge]


def test_every_mutated_manifest_is_ok_or_at_most_three_lines_naming_it(tmp_path):
    rng = random.Random(13)
    runner = CliRunner()
    outcomes = {0: 0, 2: 0}
    for case in range(CASES):
        mutate = MUTATIONS[case % len(MUTATIONS)]
        path = tmp_path / f"case{case:03d}.toml"
        path.write_bytes(mutate(QUICK, rng))
        result = runner.invoke(app, ["validate", str(path)])
        where = f"case {case} ({mutate.__name__}): {result.output!r}"
        assert result.exit_code in (0, 2), where
        assert result.exception is None or isinstance(result.exception, SystemExit), where
        outcomes[result.exit_code] += 1
        if result.exit_code == 2:
            printed = [line for line in result.output.splitlines() if line.strip()]
            assert 1 <= len(printed) <= 3, where
            assert all(line.startswith(str(path)) for line in printed), where
    assert outcomes[2] > CASES // 2 and outcomes[0] > 0  # the mutations do reach the checks


@pytest.mark.parametrize("mutate", MUTATIONS)
def test_each_mutation_changes_the_manifest(mutate):
    rng = random.Random(0)
    assert all(mutate(QUICK, rng) != QUICK for _ in range(20))
