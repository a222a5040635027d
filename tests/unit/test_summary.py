from grokscope.training.summary import classify, describe, summarize


def rows_from(train, test, every=10):
    return [
        {"step": i * every, "train_acc": a, "test_acc": b, "test_loss": 5.0 - 4.0 * b}
        for i, (a, b) in enumerate(zip(train, test, strict=True))
    ]


def test_grokking_run_is_detected():
    rows = rows_from([0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.1, 0.5, 0.995, 1.0])
    s = summarize(rows)
    assert s["memorization_step"] == 20
    assert s["generalization_step"] == 50
    assert s["generalization_ratio"] == 2.5
    assert s["regime"] == "grokked"
    assert s["steps_to_test_acc"] == {"0.9": 50, "0.95": 50, "0.99": 50, "0.999": 60}
    assert s["sharpest_test_loss_drop_step"] == 50
    assert "grokked (2.5x later)" in describe(s)


def test_regimes():
    assert classify(None, None) == "not_learned"
    assert classify(100, None) == "memorized_only"
    assert classify(100, 120) == "generalized_at_once"
    assert classify(100, 200) == "grokked"
    assert classify(100, 150, grok_ratio=1.5) == "grokked"


def test_a_run_that_ends_below_the_threshold_is_never_called_generalized():
    # A modulus-2 div run: its one test pair is right by chance at step 0, wrong once the training pair is learnt.
    rows = rows_from([0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0])
    s = summarize(rows)
    assert s["generalization_step"] is None and s["generalization_ratio"] is None
    assert s["regime"] == "memorized_only"
    assert s["steps_to_test_acc"]["0.99"] == 0  # it did touch the threshold, which the steps still say
    assert describe(s) == (
        "memorized (train acc >= 99%) at step 10; never generalized (test acc >= 99% at step 0, 0.00% at the end) "
        "-> memorized only"
    )
    # Neither memorized nor ending generalized: not learned, whatever the first row scored.
    assert summarize(rows_from([0.0, 0.5], [1.0, 0.0]))["regime"] == "not_learned"
    # Ending at or above the threshold keeps the first step that reached it, a dip on the way included.
    dipped = summarize(rows_from([0.5, 1.0, 1.0, 1.0], [0.2, 1.0, 0.6, 0.995]))
    assert (dipped["generalization_step"], dipped["regime"]) == (10, "generalized_at_once")
    # Per operation too.
    multi = [{**row, "train_acc_add": row["train_acc"], "test_acc_add": row["test_acc"]} for row in rows]
    assert summarize(multi, operations=["add"])["operations"]["add"]["regime"] == "memorized_only"
