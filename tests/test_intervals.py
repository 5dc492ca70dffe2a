"""Intervals: the Interval type, the bias-shifted bootstrap percentiles and Wilson's interval."""
import numpy as np
import pytest

from ldm_edu.intervals import Interval, shifted_percentiles, wilson_interval


def test_interval_format_and_overlap():
    a, b = Interval(12.34, 10.1, 14.6), Interval(14.6, 14.6, 20.0)
    assert str(a) == "12.3 [10.1, 14.6]"
    assert a.overlaps(b) and b.overlaps(a)                       # touching counts
    assert not a.overlaps(Interval(15.0, 14.7, 16.0))
    assert str(Interval(0.0123, -0.004, 0.029)) == "0.012 [-0.004, 0.029]"


def test_shifted_percentiles_hand_case():
    # replicates 0 … 100: the 2.5 / 97.5 % quantiles are 2.5 and 97.5, their mean 50; with value 40 the
    # bootstrap's bias is +10 and both ends move down by it
    boot = np.arange(101.0)
    assert shifted_percentiles(boot, 40.0, 0.95) == pytest.approx((-7.5, 87.5))
    assert shifted_percentiles(boot, 50.0, 0.5) == pytest.approx((25.0, 75.0))      # unbiased: plain quartiles


def test_wilson_interval_hand_case():
    iv = wilson_interval(200, 200)                 # p = 1: (1 + z²/2n − z²/2n)/(1 + z²/n) = 1/(1 + 3.8416/200)
    assert iv.value == 1 and abs(iv.low - 1 / (1 + 1.96 ** 2 / 200)) < 1e-12 and iv.high == 1
    iv = wilson_interval(150, 200)
    assert abs(iv.low - 0.6857) < 1e-3 and abs(iv.high - 0.8049) < 1e-3
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
