"""cpm_nb.evaluation.statistics: paired differences by seed and sampling errors, checked
against scipy and against values worked out by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from cpm_nb.evaluation import statistics


@pytest.mark.parametrize("a,b", [
    ([79.7, 79.6, 79.4], [75.3, 73.3, 74.6]),
    ([88.6, 87.5, 87.9], [85.0, 83.4, 85.1]),
    ([1.0, 2.0, 3.0, 4.5, 2.2], [1.5, 1.0, 3.3, 4.0, 2.0]),
    ([80.2, 79.4], [80.0, 79.9]),
])
def test_paired_difference_equals_scipys_paired_t_test(a, b):
    d = statistics.paired_difference(a, b)
    ref = stats.ttest_rel(a, b)
    assert d.t == pytest.approx(ref.statistic, rel=1e-12)
    assert d.p == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (d.low, d.high) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
    assert d.mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert d.detectable == (ci.low > 0 or ci.high < 0)


def test_a_worked_example_and_the_wording():
    # differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3) = 3.464 on 2 df
    d = statistics.paired_difference([2, 4, 6], [1, 2, 3])
    assert d.mean == 2 and d.sd == pytest.approx(1.0) and d.t == pytest.approx(2 * math.sqrt(3))
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) = 4.3027 (tables)
    assert (d.low, d.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert d.p == pytest.approx(0.07417990022744855, rel=1e-9)
    assert not d.detectable
    assert d.verdict("6 stages", "2 stages").startswith("no detectable difference (3 seeds")
    assert d.interval() == "+2.0 [-0.5, +4.5]"
    clear = statistics.paired_difference([5.1, 4.9, 5.0], [1, 1, 1])
    assert clear.detectable and clear.verdict("2 stages", "1 stage").startswith(
        "2 stages ahead by 4.0")
    assert statistics.paired_difference([1, 2], [3, 5]).verdict("a", "b").startswith(
        "no detectable")  # 2 seeds: 12.7 x se
    errors = statistics.paired_difference([1.6, 1.5, 1.7], [2.0, 2.0, 2.1])  # error shares
    assert errors.verdict("c", "the baseline", lower_is_better=True).startswith(
        "c ahead by 0.4 (lower is better; 3 seeds")
    assert clear.verdict("a", "b", lower_is_better=True).startswith("b ahead by 4.0")


def test_edge_cases():
    one = statistics.paired_difference([3.0], [1.0])
    assert one.mean == 2 and one.low is None and one.p is None and not one.detectable
    assert "one seed" in one.verdict()
    same = statistics.paired_difference([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])  # always +1
    assert same.sd == 0 and same.p == 0.0 and same.detectable and same.low == same.high == 1
    assert statistics.paired_difference([1.0, 2.0], [1.0, 2.0]).p == 1.0
    with pytest.raises(ValueError):
        statistics.paired_difference([1, 2], [1])
    with pytest.raises(ValueError):
        statistics.paired_difference([], [])
    with pytest.raises(ValueError):
        statistics.paired_difference([1, 2], [1, 2], confidence=1.0)
    assert statistics.paired_difference([1, 2, 4], [0, 0, 0]).as_json()["differences"] == [1, 2, 4]
    mean, low, high = statistics.mean_interval([1.0, 2.0, 3.0])
    assert mean == 2 and low == pytest.approx(2 - 4.302652729911275 / math.sqrt(3))


def test_binomial_and_bootstrap_standard_errors():
    assert statistics.binomial_se(80.0, 10000) == pytest.approx(0.4)
    assert statistics.binomial_se(100.0, 50) == 0.0
    with pytest.raises(ValueError):
        statistics.binomial_se(50.0, 0)
    rng = np.random.default_rng(1)
    # independent joints, one per person: the bootstrap agrees with the binomial formula
    correct = (rng.random(4000) < 0.8).astype(float)
    se = statistics.bootstrap_se(correct, np.ones(4000), resamples=4000)
    assert se == pytest.approx(statistics.binomial_se(100 * correct.mean(), 4000), rel=0.08)
    # 14 joints a person, all right or all wrong together: the people count, not the joints
    people = (rng.random(500) < 0.8).astype(float)
    se_people = statistics.bootstrap_se(14 * people, np.full(500, 14.0), resamples=4000)
    assert se_people == pytest.approx(statistics.binomial_se(100 * people.mean(), 500), rel=0.1)
    assert se_people > 3 * statistics.binomial_se(100 * people.mean(), 14 * 500)
    assert statistics.bootstrap_se([1, 2], [2, 2], seed=3) == statistics.bootstrap_se(
        [1, 2], [2, 2], seed=3)
    out = statistics.sampling_error(75.0, [3, 2], [4, 4])
    assert out["joints"] == 8 and out["binomial_se"] == pytest.approx(100 * math.sqrt(.1875 / 8))
    assert statistics.sampling_error(None, [], [])["binomial_se"] is None
