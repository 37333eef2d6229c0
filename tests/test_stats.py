"""The statistics every comparing table uses, against values computed by hand and Student's published table."""

import math

import pytest

from experiments import stats


# t_{0.975} from the standard table (e.g. any statistics text's Student's t table), to its 3 printed decimals.
@pytest.mark.parametrize("dof,quantile", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045),
                                          (1000, 1.962)])
def test_the_t_quantile_matches_the_table(dof, quantile):
    assert stats.t_quantile(0.975, dof) == pytest.approx(quantile, abs=1e-3)


def test_a_summary_is_mean_std_and_the_t_interval():
    # Values 1, 2, 3: mean 2, sample std 1, half-width 4.303 * 1 / sqrt(3) = 2.484.
    summary = stats.summarize([1, 2, 3])
    assert (summary.n, summary.mean, summary.std) == (3, 2.0, 1.0)
    assert (summary.low, summary.high) == pytest.approx((2 - 2.4843, 2 + 2.4843), abs=1e-3)
    assert summary.text() == "2.00 ± 1.00 [-0.48, 4.48] (n=3)"
    assert stats.summarize([0.5]).text(100) == "50.00 (n=1, no interval)"


def test_pairing_removes_what_the_seeds_share():
    # Seeds differ by a lot, the recipe by 0.1 on every seed +-0.01: paired, a finding; unpaired, not.
    a = [0.90, 0.95, 0.80, 0.85]
    b = [0.91, 0.96, 0.81, 0.87]
    paired = stats.paired_difference(a, b)
    assert paired.mean == pytest.approx(0.0125) and paired.is_finding
    # differences 0.01, 0.01, 0.01, 0.02: std 0.005, half-width 3.182 * 0.005 / 2 = 0.00796.
    assert (paired.low, paired.high) == pytest.approx((0.0125 - 0.00796, 0.0125 + 0.00796), abs=1e-4)
    assert paired.text(100) == "+1.25 [+0.45, +2.05] (paired, n=4; excludes 0)"
    welch = stats.welch_difference(a, b)
    assert welch.mean == pytest.approx(0.0125) and not welch.is_finding


def test_one_value_gives_no_interval_and_no_finding():
    difference = stats.paired_difference([0.9], [0.95])
    assert math.isnan(difference.low) and not difference.is_finding
    with pytest.raises(ValueError, match="paired values must come in pairs: 2 and 1"):
        stats.paired_difference([0.9, 0.8], [0.95])


def test_a_paired_ratio_is_the_geometric_mean_with_the_interval_of_its_logarithms():
    # Ratios 0.4, 0.5, 0.625: their logarithms are ln 0.5 -+ 0.2231, so the geometric mean is 0.5 exactly; the
    # half-width is t(0.975, 2) x 0.2231 / sqrt(3) = 4.303 x 0.1288 = 0.5543, so [0.5 e^-0.5543, 0.5 e^0.5543].
    ratio = stats.paired_ratio([100, 120, 80], [40, 60, 50])
    assert ratio.geometric_mean == pytest.approx(0.5, abs=1e-12)
    assert (ratio.low, ratio.high) == pytest.approx((0.2872, 0.8703), abs=1e-4)
    assert ratio.text() == "0.500 [0.287, 0.870] (paired, n=3; geometric mean)"
    assert stats.paired_ratio([10], [5]).text() == "0.500 (n=1, no interval)"
    with pytest.raises(ValueError, match="positive"):
        stats.paired_ratio([10, 0], [5, 5])
