"""The published headline and README blocks, on the report tests' synthetic studies."""

import pytest
from test_render import study_data, synthetic_data

from suite.errors import SuiteError
from suite.report.publish import END, START, Provenance, headline, results_readme, splice
from suite.report.render import render_report


def test_headline_is_best_of_l2_where_several_l2_attacks_ran(tmp_path):
    data = study_data()  # C&W L2 and DDN on the same digits
    attack, table = headline(render_report(data, tmp_path / "r", formats=("md",)), data)
    assert attack == "best-l2"
    rows = table.set_index("condition")
    assert rows.loc["t100-e20", "baseline"] == "base-e20"
    assert rows.loc["t100-e20", "verdict"].startswith("more robust")
    assert "no verdict" in rows.loc["dm", "verdict"]


def test_headline_falls_back_to_cw_and_shows_the_masking_flag(tmp_path):
    data = synthetic_data()  # one C&W L2 attack; the distilled condition is flagged on both seeds
    attack, table = headline(render_report(data, tmp_path / "r", formats=("md",)), data)
    assert attack == "cw-l2"
    flags = table.set_index("condition")["gradient masking flag"]
    assert flags["defensive-t50"] == "yes (2/2 seeds)" and flags["standard"] == "no"
    text = results_readme(
        attack,
        table,
        "Conclusion.",
        Provenance("m.toml", "abc123", 90.0, "CPU", "mnist-5k: x", "now", ("make results",)),
    )
    assert "`abc123`" in text and "1.5 min" in text and "| defensive-t50 |" in text


def test_splice_replaces_only_between_the_markers():
    readme = f"top\n{START}\nold | table\n{END}\nbottom\n"
    assert splice(readme, f"{START}\nnew\n{END}") == f"top\n{START}\nnew\n{END}\nbottom\n"
    with pytest.raises(SuiteError, match="no results markers"):
        splice("top\nbottom\n", "x")
