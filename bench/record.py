"""Run a benchmark and keep what it measured: `python bench/record.py NAME -- python bench/X.py ARGS`
runs the command (its standard error, where benchmarks report progress, reaches the terminal as
it is written; its standard output as each line ends), reads the JSON document it prints first,
and writes it to bench/results/NAME.json with the command, the date and the machine.
`bench/render_docs.py` turns every such file into docs/benchmarks.md (`make docs`)."""

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: python bench/record.py NAME -- COMMAND [ARGS...]")
    name, command = sys.argv[1], sys.argv[3:]
    if not name.replace("-", "").replace("_", "").isalnum():
        sys.exit(f"NAME {name!r}: letters, digits, - and _ only (it names bench/results/NAME.json)")
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        for line in child.stdout:  # stderr is inherited: progress is never held back
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    done = subprocess.CompletedProcess(command, child.returncode, "".join(lines))
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}; nothing recorded")
    start = done.stdout.find("{")
    try:
        result, _ = json.JSONDecoder().raw_decode(done.stdout[start:]) if start >= 0 else (None, 0)
    except json.JSONDecodeError as exc:
        sys.exit(f"{' '.join(command)} printed no JSON document first ({exc}); nothing recorded")
    import torch  # the machine's torch, as the benchmark ran it

    record = {
        "command": " ".join(command),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "result": result,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"recorded bench/results/{name}.json", file=sys.stderr)


if __name__ == "__main__":
    main()
