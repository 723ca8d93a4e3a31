"""What a run prints off a terminal: one line per finished bar, also for bars without a total, and
a line a minute while a bar runs; on a terminal, only the live bars."""

import io

from rich.console import Console
from rich.progress import Progress

import suite.console
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


def test_a_long_bar_says_where_it_stands_off_a_terminal_and_never_on_one(monkeypatch):
    monkeypatch.setattr(suite.console, "HEARTBEAT_S", 0.0)
    for terminal in (False, True):
        out = io.StringIO()
        console = Console(file=out, force_terminal=terminal, width=160)
        with Progress(console=console, auto_refresh=False) as bars:
            task = RichProgress(bars).task("t100 seed 0 student: cw-l2", total=200)
            task.update(50, success="48/50")
            task.update(100, success="97/100")
            task.close()
        text = out.getvalue()
        still = [line for line in text.splitlines() if "still running:" in line]
        if terminal:
            assert still == [] and "finished" not in text
        else:
            assert len(still) == 2
            assert "still running: t100 seed 0 student: cw-l2 (100/200) after" in still[1]
            assert still[1].endswith("success=97/100")


def test_a_bar_stuck_in_one_long_step_still_says_it_runs_off_a_terminal(monkeypatch):
    """AutoAttack's batch is one call that never moves its bar: the heartbeat thread still prints
    a "still running" line once a HEARTBEAT_S, and stops when the run ends."""
    import time

    monkeypatch.setattr(suite.console, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(suite.console, "BEAT_CHECK_S", 0.05)
    out = io.StringIO()
    monkeypatch.setattr(
        suite.console, "console", Console(file=out, force_terminal=False, width=160)
    )
    with suite.console.live_progress() as progress:
        task = progress.task("t100 seed 0 model: autoattack", total=200)
        time.sleep(0.7)  # one long step: no update
        task.close()
    still = [line for line in out.getvalue().splitlines() if "still running:" in line]
    assert len(still) >= 2
    assert "still running: t100 seed 0 model: autoattack (0/200) after" in still[0]
    quiet = out.getvalue()
    time.sleep(0.3)
    assert out.getvalue() == quiet  # no beat after the run
