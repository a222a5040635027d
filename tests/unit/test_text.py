"""grokscope.viz.text: the shared number formatting of the printed summaries."""

import doctest

import grokscope.viz.text as text
from grokscope.viz.text import MISSING, aligned, duration, interval, mean, mean_sd, number, percent, plural, significant


def test_missing_values_print_the_same_everywhere():
    assert {number(None), significant(None), percent(None), mean_sd(None), duration(None)} == {MISSING}
    assert interval(None, 1.0) == MISSING and mean_sd({"mean": None, "sd": 1.0}) == MISSING


def test_formats():
    assert number(0.5, ".2f") == "0.50" and significant(1170.4) == "1170" and significant(0.012345) == "0.0123"
    assert percent(0.5) == "50%" and percent(0.1234, 1) == "12.3%"
    assert duration(5.4) == "5s" and duration(125) == "2m05s"
    assert interval(0.1, 0.25, ".2f") == "[0.10, 0.25]"
    assert plural(1, "run") == "1 run" and plural(2, "run") == "2 runs"


def test_mean_sd_states_n():
    assert mean_sd({"mean": 2.0, "sd": 0.5, "n": 4}, ".1f") == "2.0 ± 0.5 (n=4)"
    assert mean_sd({"mean": 2.0, "sd": None, "n": 1}, ".1f") == "2.0 (n=1)"
    assert mean_sd({"mean": 2.0, "sd": 0.5, "n": 4}, ".1f", with_n=False) == "2.0 ± 0.5"


def test_mean_skips_missing_and_non_finite():
    assert mean([1.0, None, 3.0, float("nan")]) == 2.0 and mean([None]) is None


def test_aligned_pads_columns():
    assert aligned([["", "a"], ["long", "b"]]) == ["      a", "long  b"]


def test_doctests():
    assert doctest.testmod(text).failed == 0
