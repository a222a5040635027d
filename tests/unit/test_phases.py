"""The phase rule on synthetic curves with known boundaries: a logistic jump of test accuracy and a logistic drop of
log test loss (a logistic's rate is at least half its peak within c ± w·ln(3 + 2√2) of its centre c) on plateaus,
followed by the slow fall weight decay keeps up; an excluded train loss that falls to a floor and rises. The
boundaries must not move when the run is truncated after cleanup, trained longer, or analysed at other
checkpoints."""

import math

import pytest

from grokscope.analysis.phases import (
    GENERALIZED,
    cleanup_bounds,
    detect_phases,
    fall_rates,
    memorization_end,
)

EVAL = 10
JUMP, JUMP_WIDTH = 1150, 30  # test accuracy's jump from 2% to 100%
CENTRE, WIDTH = 1200, 60  # the drop of log test loss
HALF_WIDTH = math.log(3 + 2 * math.sqrt(2))  # in widths: where a logistic's rate is half its peak
MEMORIZED_AT = 100  # train accuracy reaches 99%
FLOOR_FROM, TURN_FROM = 250, 400  # the excluded loss reaches its floor, then rises


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def log_test_loss(step: int, drift: float = 2e-4) -> float:
    """A plateau at ln 20, a drop of 12 nats centred at CENTRE, and a slow linear fall throughout."""
    return math.log(20) - 12 * sigmoid((step - CENTRE) / WIDTH) - drift * step


def curves(last: int, eval_every: int = EVAL) -> dict[str, list[float]]:
    steps = list(range(0, last + 1, eval_every))
    return {
        "step": steps,
        "test_loss": [math.exp(log_test_loss(s)) for s in steps],
        "train_acc": [min(1.0, s / MEMORIZED_AT * 0.99) if s <= MEMORIZED_AT else 1.0 for s in steps],
        # Generalized (>= 99%) at about JUMP + 4.6 widths, after the steepest fall of log loss.
        "test_acc": [0.02 + 0.98 * sigmoid((s - JUMP) / JUMP_WIDTH) for s in steps],
    }


def excluded(step: int) -> float:
    """Falls from ln 59 to a floor of 1e-3 by FLOOR_FROM, wobbles on it by ±4%, rises from TURN_FROM."""
    if step < FLOOR_FROM:
        return math.exp(math.log(4.08) + (math.log(1e-3) - math.log(4.08)) * step / FLOOR_FROM)
    wobble = 1 + 0.04 * math.sin(step / 7)
    return 1e-3 * wobble * (1 if step < TURN_FROM else math.exp((step - TURN_FROM) / 100))


def bounds(c: dict[str, list[float]]) -> tuple[int | None, int | None]:
    return cleanup_bounds(c["step"], c["test_loss"], c["train_acc"], c["test_acc"])


def test_cleanup_runs_from_the_jump_of_test_accuracy_to_the_end_of_the_drop_of_log_test_loss():
    start, end = bounds(curves(3000))
    # The half-maximum points of the logistics' rates, to within the evaluation interval and the central difference.
    assert start == pytest.approx(JUMP - HALF_WIDTH * JUMP_WIDTH, abs=2 * EVAL)
    assert end == pytest.approx(CENTRE + HALF_WIDTH * WIDTH, abs=2 * EVAL)


def test_truncating_after_cleanup_or_training_longer_moves_nothing():
    reference = bounds(curves(3000))
    end = reference[1]
    assert end is not None
    # Truncated just past the end of cleanup (the central difference needs two evaluations more) ...
    assert bounds(curves(end + 2 * EVAL)) == reference
    # ... or trained ten times as long, under the same slow fall.
    assert bounds(curves(30_000)) == reference


def test_a_run_stopped_mid_drop_has_no_cleanup_end_and_an_ungeneralized_one_no_cleanup():
    c = curves(3000)
    generalized = next(s for s, acc in zip(c["step"], c["test_acc"], strict=True) if acc >= GENERALIZED)
    start, end = bounds(curves(generalized + 3 * EVAL))  # generalized, log test loss still dropping
    assert start == bounds(c)[0] and end is None
    assert bounds(curves(generalized - EVAL)) == (None, None)  # not generalized yet: no jump to delimit


def test_noise_on_the_plateaus_is_not_the_jump():
    c = curves(3000)
    # Wobbles of 0.5% accuracy and 2% loss every other evaluation before the jump: far below its rates.
    early = [s < 900 for s in c["step"]]
    c["test_acc"] = [
        a + (0.005 if i % 2 and e else 0.0) for i, (a, e) in enumerate(zip(c["test_acc"], early, strict=True))
    ]
    c["test_loss"] = [
        x * (1.02 if i % 2 and e else 1.0) for i, (x, e) in enumerate(zip(c["test_loss"], early, strict=True))
    ]
    assert bounds(c) == bounds(curves(3000))


def test_what_test_accuracy_does_while_the_model_memorizes_is_not_the_jump():
    c = curves(3000)
    # A rise of test accuracy from 0 to 30% while the training set is memorized (steps 0-100), as at a large
    # learning rate: steeper than nothing, but over before the training set is memorized.
    c["test_acc"] = [
        min(0.3, 0.3 * s / MEMORIZED_AT) if s <= 200 else a for s, a in zip(c["step"], c["test_acc"], strict=True)
    ]
    assert bounds(c) == bounds(curves(3000))


def test_fall_rates_are_central_differences():
    steps, logs = [0, 10, 20, 30, 40, 50], [5.0, 4.0, 2.0, 1.0, 0.5, 0.0]
    rates = fall_rates(steps, logs)
    assert rates[:2] == [None, None] and rates[-2:] == [None, None]
    assert rates[2] == pytest.approx((5.0 - 0.5) / 40) and rates[3] == pytest.approx((4.0 - 0.0) / 40)


def test_memorization_ends_on_the_floor_of_the_excluded_loss_before_it_turns():
    steps = list(range(0, 1001, 10))
    assert memorization_end(steps, [excluded(s) for s in steps]) == FLOOR_FROM
    # Not before the excluded loss has turned (still on its floor), nor when the rows begin on the floor.
    early = [s for s in steps if s < TURN_FROM]
    assert memorization_end(early, [excluded(s) for s in early]) is None
    late = [s for s in steps if s >= FLOOR_FROM]
    assert memorization_end(late, [excluded(s) for s in late]) is None


def test_checkpoint_spacing_moves_the_memorization_end_by_at_most_the_spacing():
    fine = list(range(0, 1001, 10))
    coarse = list(range(0, 1001, 100))
    at_fine = memorization_end(fine, [excluded(s) for s in fine])
    at_coarse = memorization_end(coarse, [excluded(s) for s in coarse])
    assert at_fine is not None and at_coarse is not None
    assert abs(at_fine - at_coarse) <= 100


def rows_and_metrics(last: int, checkpoint_every: int) -> tuple[list[dict], list[dict]]:
    c = curves(last)
    metrics = [
        {"step": s, "test_loss": tl, "train_acc": tr, "test_acc": te}
        for s, tl, tr, te in zip(c["step"], c["test_loss"], c["train_acc"], c["test_acc"], strict=True)
    ]
    rows = [
        {
            "step": s,
            "modulus": 59,
            "key_frequencies": [3, 7],
            "key_reference": f"final:{last}",
            "full": {"loss": {"train": 1e-3, "test": math.exp(log_test_loss(s))}},
            "excluded": {"loss": {"train": excluded(s), "test": 1.0, "all": 1.0}},
        }
        for s in range(0, last + 1, checkpoint_every)
    ]
    return rows, metrics


def test_detect_phases_reads_the_metrics_for_the_drop_and_the_rows_for_memorization():
    rows, metrics = rows_and_metrics(3000, 10)
    phases = detect_phases(rows, metrics)
    assert phases.memorization_end == FLOOR_FROM  # later than train acc >= 99% (step 100)
    assert (phases.circuit_formation_end, phases.cleanup_end) == bounds(curves(3000))
    assert phases.chance_loss == pytest.approx(math.log(59)) and phases.key_frequencies == [3, 7]
    assert GENERALIZED == 0.99
    # Checkpoints every 100 rather than 10: the drop does not move (it is read from the metrics), memorization by
    # at most the spacing.
    coarse = detect_phases(*rows_and_metrics(3000, 100))
    assert (coarse.circuit_formation_end, coarse.cleanup_end) == (phases.circuit_formation_end, phases.cleanup_end)
    assert abs(coarse.memorization_end - phases.memorization_end) <= 100
    # Only the rows that the selection analysed: the same boundaries when they reach past the turn.
    few = [r for r in rows if r["step"] in (0, 100, 200, 250, 300, 600, 2000, 3000)]
    assert detect_phases(few, metrics).memorization_end == FLOOR_FROM


def test_memorization_waits_for_the_training_set_when_the_floor_comes_first():
    rows, metrics = rows_and_metrics(3000, 10)
    for m in metrics:  # memorized only at step 300, after the excluded loss's floor (250)
        m["train_acc"] = 1.0 if m["step"] >= 300 else 0.5
    assert detect_phases(rows, metrics).memorization_end == 300
