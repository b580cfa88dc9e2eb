"""Holm's step-down adjustment: a hand-worked family, nan members, bounds, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from hgprompt_ray.transfer.multiple_testing import holm


def test_holm_matches_a_hand_worked_family():
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> raised to 0.06 (non-decreasing)
    np.testing.assert_allclose(holm([0.04, 0.01, 0.03]), [0.06, 0.03, 0.06])
    # nan is no member of the family: m = 2 here
    np.testing.assert_allclose(holm([0.02, np.nan, 0.5]), [0.04, np.nan, 0.5])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])  # 2 x 0.6 capped at 1; then non-decreasing
    assert holm([]).shape == (0,) and np.isnan(holm([np.nan])).all()


def test_holm_never_lowers_a_p_and_keeps_the_order():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=12)
    adjusted = holm(p)
    assert (adjusted >= p).all() and (adjusted <= 1).all()
    order = np.argsort(p)
    assert (np.diff(adjusted[order]) >= 0).all()
    assert adjusted.min() == pytest.approx(min(1.0, 12 * p.min()))


def test_holm_refuses_what_is_no_p_value():
    with pytest.raises(ValueError, match="must lie in"):
        holm([0.2, 1.5])
