"""Source checkpoints are chosen by criteria on the metrics history."""

from grokscope.experiments.transfer_core.checkpoints import Choice, choose_checkpoints
from grokscope.experiments.transfer_core.config import Criteria, PartialCondition
from grokscope.experiments.transfer_core.measures import accuracy_at, crossings

EVERY_10 = list(range(0, 101, 10))


def history():
    # step: (train_acc, test_acc): memorizes by 30, test stays low until 60, groks by 90.
    points = {
        0: (0.0, 0.0),
        10: (0.5, 0.01),
        20: (0.95, 0.02),
        30: (1.0, 0.03),
        40: (1.0, 0.1),
        50: (1.0, 0.4),
        60: (1.0, 0.7),
        70: (1.0, 0.95),
        80: (1.0, 0.998),
        90: (1.0, 0.9995),
        100: (1.0, 1.0),
    }
    return [{"step": s, "epoch": s, "train_acc": a, "test_acc": b} for s, (a, b) in points.items()]


def test_grokked_is_the_first_checkpoint_at_the_threshold():
    choice = choose_checkpoints(history(), [0, 20, 40, 60, 80, 90, 100], Criteria())["grokked"]
    assert choice.step == 90 and choice.test_acc == 0.9995 and "0.999" in choice.reason


def test_only_checkpointed_steps_can_be_chosen():
    assert choose_checkpoints(history(), [0, 50, 100], Criteria())["grokked"].step == 100


# --- memorized: the end of the memorization phase (the default) ---------------------------------------------------


def test_memorized_is_the_latest_memorizing_checkpoint_by_the_end_of_the_memorization_phase():
    assert Criteria().memorized_pick == "phase"
    # Phase ends at 45: checkpoints 30 and 40 memorize (train acc >= 0.99) and lie before it; 40 is the latest.
    choice = choose_checkpoints(history(), EVERY_10, Criteria(), memorization_end=45)["memorized"]
    assert choice == Choice(40, choice.reason, 1.0, 0.1)
    assert "memorization phase" in choice.reason and "45" in choice.reason
    # A checkpoint exactly at the end counts; one after it never does, whatever its test accuracy.
    assert choose_checkpoints(history(), EVERY_10, Criteria(), memorization_end=50)["memorized"].step == 50
    assert choose_checkpoints(history(), [0, 20, 60, 100], Criteria(), memorization_end=50)["memorized"].step is None
    # Only checkpointed steps, and train acc at the criterion: with 0.9 the checkpoint at 20 (0.95) qualifies.
    assert (
        choose_checkpoints(history(), [0, 20, 60], Criteria(memorized_train_acc=0.9), memorization_end=50)[
            "memorized"
        ].step
        == 20
    )
    # The ceiling on test accuracy plays no part in the phase pick.
    assert (
        choose_checkpoints(history(), EVERY_10, Criteria(memorized_test_acc=0.05), memorization_end=50)[
            "memorized"
        ].step
        == 50
    )


def test_no_memorization_phase_means_no_memorized_checkpoint_and_says_why():
    choice = choose_checkpoints(history(), EVERY_10, Criteria(), memorization_end=None)["memorized"]
    assert choice.step is None and choice.train_acc is None
    assert choice.reason == "no memorization phase found in the source's progress measures"
    # A phase that ends before the run memorizes: none qualifies, and the reason names the end and the criterion.
    early = choose_checkpoints(history(), EVERY_10, Criteria(), memorization_end=25)["memorized"]
    assert early.step is None and "0.99" in early.reason and "(25)" in early.reason


def test_the_accuracy_ceiling_variants_pick_first_or_last_below_the_test_ceiling():
    ceiling = "an accuracy-ceiling variant, not the memorization phase"
    last = choose_checkpoints(history(), EVERY_10, Criteria(memorized_pick="last"))["memorized"]
    first = choose_checkpoints(history(), EVERY_10, Criteria(memorized_pick="first"))["memorized"]
    assert (last.step, first.step) == (50, 30) and ceiling in last.reason and last.reason.startswith("last")
    # memorization_end is ignored by the variants.
    assert (
        choose_checkpoints(history(), EVERY_10, Criteria(memorized_pick="last"), memorization_end=30)["memorized"].step
        == 50
    )
    strict = Criteria(memorized_pick="last", memorized_test_acc=0.05)
    assert choose_checkpoints(history(), EVERY_10, strict)["memorized"].step == 30


def test_unsatisfied_criteria_say_why():
    rows = [r for r in history() if r["step"] <= 60]
    choices = choose_checkpoints(rows, [0, 30, 60], Criteria())
    assert choices["grokked"].step is None and "0.999" in choices["grokked"].reason
    no_memorization = [{**r, "train_acc": 0.5} for r in history()]
    for criteria in (Criteria(), Criteria(memorized_pick="first"), Criteria(memorized_pick="last")):
        choice = choose_checkpoints(no_memorization, [0, 50], criteria, memorization_end=50)["memorized"]
        assert choice.step is None and "train acc >= 0.99" in choice.reason


def test_partial_conditions_by_accuracy_or_step():
    partial = [
        PartialCondition(name="half", test_acc=0.5),
        PartialCondition(name="at70", step=70),
        PartialCondition(name="at75", step=75),
    ]
    choices = choose_checkpoints(history(), EVERY_10, Criteria(), partial)
    assert choices["half"].step == 60 and choices["at70"].step == 70
    assert choices["at75"].step is None and "75" in choices["at75"].reason


def test_steps_to_thresholds_and_early_accuracy():
    rows = history()
    assert crossings(rows) == {"0.9": 70, "0.95": 70, "0.99": 80, "0.999": 90}
    assert crossings(rows, key="train_acc") == {"0.9": 20, "0.95": 20, "0.99": 30, "0.999": 30}
    # Epochs are a column of their own: two steps per epoch here.
    halved = [{**r, "epoch": r["step"] / 2} for r in rows]
    assert crossings(halved, at="epoch") == {"0.9": 35, "0.95": 35, "0.99": 40, "0.999": 45}
    assert accuracy_at(rows, 55) == 0.4
    assert crossings(rows[:5])["0.9"] is None
