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
