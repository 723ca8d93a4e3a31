"""What a run prints off a terminal: one line per finished bar, also for bars without a total."""

import io

from rich.console import Console
from rich.progress import Progress

from suite.console import RichProgress


def test_finished_bars_print_one_line_each_with_or_without_a_total():
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=False, width=160)) as bars:
        progress = RichProgress(bars)
        sized = progress.task("base seed 0 model: cw", total=12)
        sized.update(12)
        sized.close()
        open_ended = progress.task("random-ipc10 seed 0: select", total=None)
        open_ended.update(3)
        open_ended.close()
    lines = out.getvalue().splitlines()
    assert any("finished base seed 0 model: cw (12/12) in" in line for line in lines)
    assert any("finished random-ipc10 seed 0: select (3) in" in line for line in lines)
