"""Source checkpoints are chosen by criteria on the metrics history."""

from grokscope.experiments.transfer import Criteria, PartialCondition, accuracy_at, choose_checkpoints, epochs_to


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


def test_memorized_is_the_last_or_first_checkpoint_that_fits_train_high_test_low():
    steps = list(range(0, 101, 10))
    assert choose_checkpoints(history(), steps, Criteria())["memorized"].step == 50
    assert choose_checkpoints(history(), steps, Criteria(memorized_pick="first"))["memorized"].step == 30
    strict = Criteria(memorized_test_acc=0.05)
    assert choose_checkpoints(history(), steps, strict)["memorized"].step == 30


def test_unsatisfied_criteria_say_why():
    rows = [r for r in history() if r["step"] <= 60]
    choices = choose_checkpoints(rows, [0, 30, 60], Criteria())
    assert choices["grokked"].step is None and "0.999" in choices["grokked"].reason
    no_memorization = [{**r, "train_acc": 0.5} for r in history()]
    assert choose_checkpoints(no_memorization, [0, 50], Criteria())["memorized"].step is None


def test_partial_conditions_by_accuracy_or_step():
    partial = [PartialCondition(name="half", test_acc=0.5), PartialCondition(name="at70", step=70)]
    choices = choose_checkpoints(history(), list(range(0, 101, 10)), Criteria(), partial)
    assert choices["half"].step == 60 and choices["at70"].step == 70


def test_epochs_to_thresholds_and_early_accuracy():
    rows = history()
    assert epochs_to(rows) == {"0.9": 70, "0.95": 70, "0.99": 80, "0.999": 90}
    assert accuracy_at(rows, 55) == 0.4
    assert epochs_to(rows[:5])["0.9"] is None
