"""The rerunnable figures of WORKSPACE.md: the counts hold at this commit and the notebook states what is checked."""

import pathlib

from conftest import REPO_ROOT

from experiments import figures


def test_every_count_the_notebook_quotes_still_holds():
    checked = figures.count_figures()
    assert len(checked) == 2 * len(figures.COUNTS)
    assert [figure.what for figure in checked if not figure.holds] == []


def test_the_notebook_states_the_figures_the_check_compares_against():
    notebook = pathlib.Path(REPO_ROOT, "WORKSPACE.md").read_text()
    assert f"**{100 * figures.MAIN_JOB_ACCURACY:.2f}%**" in notebook
    for arch, _, weights, macs, _ in figures.COUNTS:
        assert f"{macs:,}" in notebook or f"{macs / 1e6:.1f}M" in notebook, arch


def test_a_figure_off_by_more_than_its_tolerance_does_not_hold():
    assert figures.Figure("x", "1", 0.9874, 0.9860, 0.0015).holds
    assert not figures.Figure("x", "1", 0.9874, 0.9850, 0.0015).holds
    assert "| x | 1 | 98.74% | 98.50% | NO |" in figures.format_figures([figures.Figure("x", "1", 0.9874, 0.985,
                                                                                          0.0015)])
