"""``experiments.race``'s table: medians, ranges and the ratio to the baseline, from runs' results."""

import pytest

from experiments import racing


def _entrant(flagfile, seconds, accuracies):
    runs = [dict(seconds_to_target=s, images_to_target=None if s is None else 1024 * int(s), test_accuracy=a,
                 train_seconds=2 * (s or 500), images_per_second=100.0) for s, a in zip(seconds, accuracies)]
    return racing.Entrant(racing.entrant_name(flagfile), flagfile, runs)


def test_the_table_gives_medians_ranges_and_the_ratio_of_medians():
    baseline = _entrant("flags/slow.cfg", [100.0, 120.0, 110.0], [0.991, 0.992, 0.990])
    candidate = _entrant("flags/fast.cfg", [20.0, 25.0, 22.0], [0.990, 0.993, 0.991])
    rows = racing.make_table([baseline, candidate], 0.99).splitlines()[2:]
    assert rows[0] == ("| `flags/slow.cfg` | 3/3 | 110.0 (100.0–120.0) | 1.000 | 112,640 (102,400–122,880) | "
                       "99.10 (99.00–99.20) | 220.0 | 100 |")
    assert rows[1] == ("| `flags/fast.cfg` | 3/3 | 22.0 (20.0–25.0) | 0.200 | 22,528 (20,480–25,600) | "
                       "99.10 (99.00–99.30) | 44.0 | 100 |")


def test_no_ratio_when_a_seed_missed_the_target():
    baseline = _entrant("flags/slow.cfg", [100.0, 120.0], [0.991, 0.992])
    candidate = _entrant("flags/fast.cfg", [20.0, None], [0.990, 0.985])
    row = racing.make_table([baseline, candidate], 0.99).splitlines()[3]
    assert row.startswith("| `flags/fast.cfg` | 1/2 | 20.0 (20.0–20.0) | — |")


def test_a_folder_holding_runs_of_a_recipe_is_refused(tmp_path):
    (tmp_path / "fast-seed0").mkdir()
    with pytest.raises(racing.RaceError, match=f"^{tmp_path} already holds runs of fast; a race's times compare "
                                               "only within one invocation, so pass a new --logdir$"):
        racing.race_and_report(["flags/slow.cfg", "flags/fast.cfg"], 0.99, 1, str(tmp_path), str(tmp_path / "r.md"),
                               "the command")
