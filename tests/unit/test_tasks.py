import pytest
import torch

from grokscope.errors import UserError
from grokscope.tasks import IGNORE, OPERATIONS, ModularTask, is_prime, make_split


def answer(op: str, a: int, b: int, n: int) -> int:
    return int(OPERATIONS[op].fn(torch.tensor([a]), torch.tensor([b]), n))


@pytest.mark.parametrize(
    ("op", "a", "b", "n", "expected"),
    [
        ("add", 5, 4, 7, 2),
        ("sub", 2, 5, 7, 4),
        ("mul", 3, 5, 7, 1),
        ("div", 1, 3, 7, 5),  # 3 * 5 = 15 = 1 mod 7
        ("square_sum", 3, 4, 7, 4),  # 9 + 16 = 25
        ("quad", 2, 3, 7, 5),  # 4 + 6 + 9 = 19
        ("quad_plus_a", 2, 3, 7, 0),  # 19 + 2 = 21
        ("cubic", 2, 3, 7, 0),  # 8 + 6 = 14
        ("cubic_plus_b", 2, 3, 7, 1),  # 8 + 18 + 3 = 29
        ("add", 100, 100, 113, 87),
    ],
)
def test_known_answers(op, a, b, n, expected):
    assert answer(op, a, b, n) == expected


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_every_operation_matches_python_integers(op):
    n = 11
    formulas = {
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "div": lambda a, b: a * pow(b, -1, n),
        "square_sum": lambda a, b: a * a + b * b,
        "quad": lambda a, b: a * a + a * b + b * b,
        "quad_plus_a": lambda a, b: a * a + a * b + b * b + a,
        "cubic": lambda a, b: a**3 + a * b,
        "cubic_plus_b": lambda a, b: a**3 + a * b * b + b,
    }
    task = ModularTask(OPERATIONS[op], n)
    pairs = task.pairs()
    got = task.answers(pairs).tolist()
    assert got == [formulas[op](a, b) % n for a, b in pairs.tolist()]


def test_division_inverts_multiplication():
    p = 13
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(1, p)).unbind(-1)
    product = OPERATIONS["mul"].fn(a, b, p)
    assert torch.equal(OPERATIONS["div"].fn(product, b, p), a)


def test_division_excludes_zero_divisor_and_needs_prime():
    task = ModularTask(OPERATIONS["div"], 7)
    assert (task.pairs()[:, 1] != 0).all()
    assert task.n_pairs == len(task.pairs()) == 7 * 6
    with pytest.raises(UserError, match="prime"):
        ModularTask(OPERATIONS["div"], 8)
    assert ModularTask(OPERATIONS["add"], 8).n_pairs == 64  # composite moduli are fine elsewhere


def test_is_prime():
    assert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]


def test_nanda_format():
    task = ModularTask(OPERATIONS["add"], 7)
    assert (task.n_ctx, task.d_vocab, task.d_vocab_out, task.answer_position) == (3, 8, 7, 2)
    data = task.dataset()
    assert len(data) == 49
    row = 3 * 7 + 5  # a-major order: (a=3, b=5)
    assert data.tokens[row].tolist() == [3, 5, 7]
    assert data.labels[row].tolist() == [IGNORE, IGNORE, 1]
    assert data.answers[row] == 1


def test_power_format_answer_only_and_all_positions():
    op = OPERATIONS["mul"]
    answer_only = ModularTask(op, 7, format="power", loss_on="answer")
    everything = ModularTask(op, 7, format="power", loss_on="all")
    assert (answer_only.n_ctx, answer_only.d_vocab, answer_only.d_vocab_out) == (8, 11, 11)
    bos, op_tok, eq, eos = 7, 8, 9, 10
    row = 3 * 7 + 5
    assert answer_only.dataset().tokens[row].tolist() == [bos, 3, op_tok, 5, eq, 1, eos, eos]
    assert answer_only.loss_positions == (4,)
    assert answer_only.dataset().labels[row].tolist() == [IGNORE] * 4 + [1] + [IGNORE] * 3
    # Next-token labels: position t predicts token t + 1.
    assert everything.loss_positions == tuple(range(7))
    assert everything.dataset().labels[row].tolist() == [3, op_tok, 5, eq, 1, eos, eos, IGNORE]


def test_input_range_restricts_operands_but_not_vocabulary():
    task = ModularTask(OPERATIONS["add"], 64, input_range=8)
    pairs = task.pairs()
    assert len(pairs) == 64 and pairs.max() == 7
    assert task.d_vocab == 65
    assert task.answers(pairs).max() == 14
    with pytest.raises(UserError, match="input_range"):
        ModularTask(OPERATIONS["add"], 7, input_range=8)


def test_modulus_two_is_allowed_and_one_is_not():
    assert ModularTask(OPERATIONS["add"], 2).n_pairs == 4
    with pytest.raises(UserError, match="modulus"):
        ModularTask(OPERATIONS["add"], 1)


def test_split_is_seeded_disjoint_and_complete():
    a = make_split(100, 0.3, 0.1, seed=5)
    b = make_split(100, 0.3, 0.1, seed=5)
    c = make_split(100, 0.3, 0.1, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.as_dict().values(), b.as_dict().values(), strict=True))
    assert not torch.equal(a.train, c.train)
    assert (len(a.train), len(a.val), len(a.test)) == (30, 10, 60)
    everything = torch.cat([a.train, a.val, a.test]).sort().values
    assert torch.equal(everything, torch.arange(100))


def test_split_refuses_empty_sets():
    with pytest.raises(UserError, match="train_fraction"):
        make_split(10, 0.01)
