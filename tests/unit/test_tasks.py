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


# The random operation's table, drawn here as documented (uniform, seed 0, row a, column b).
_table_11 = torch.randint(0, 11, (11, 11), generator=torch.Generator().manual_seed(0)).tolist()


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
        "random": lambda a, b: _table_11[a][b],
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


# Several operations, nested splits, replay ------------------------------------------------------------------------
def _multi(names, n=7, **kw):
    return ModularTask(tuple(OPERATIONS[x] for x in names), n, **kw)


@pytest.mark.parametrize("fmt", ["nanda", "power"])
def test_multi_operation_dataset_has_every_operation_with_its_own_token(fmt):
    task = _multi(["add", "sub", "mul"], 7, format=fmt)
    one = ModularTask(OPERATIONS["add"], 7, format=fmt)
    data = task.dataset()
    assert len(data) == task.n_pairs == 3 * 49
    assert task.d_vocab == one.d_vocab + 2
    position = 2  # the operation token: the last input of nanda, OP of power
    seen_tokens = {}
    for row in range(len(data)):
        a, b = (int(x) for x in data.pairs[row])
        k = int(data.operation[row])
        expected = [(a + b) % 7, (a - b) % 7, (a * b) % 7][k]
        assert int(data.answers[row]) == expected
        seen_tokens.setdefault(k, set()).add(int(data.tokens[row, position]))
    # one token per operation, distinct, and the first is the one-operation task's own
    assert all(len(v) == 1 for v in seen_tokens.values())
    tokens = [next(iter(seen_tokens[k])) for k in range(3)]
    assert len(set(tokens)) == 3
    assert tokens[0] == int(one.dataset().tokens[0, position])
    assert all(t >= 7 for t in tokens) and max(tokens) < task.d_vocab
    # the first operation's part of the dataset is the one-operation dataset, token for token
    assert torch.equal(data.tokens[:49], one.dataset().tokens)


def test_multi_operation_split_is_alike_for_every_operation():
    task = _multi(["add", "sub"], 11)
    split = task.split(0.4, seed=3)
    data = task.dataset()
    for part in (split.train, split.test):
        by_op = [
            {tuple(int(x) for x in data.pairs[i]) for i in part.tolist() if int(data.operation[i]) == k} for k in (0, 1)
        ]
        assert by_op[0] == by_op[1]
    # one operation's split is exactly the plain split of its examples (runs made before keep their split)
    one = ModularTask(OPERATIONS["add"], 11)
    plain = make_split(one.n_pairs, 0.4, seed=3)
    assert torch.equal(one.split(0.4, seed=3).train, plain.train)
    assert torch.equal(task.restrict_split(split, "add").train, plain.train)
    assert torch.equal(task.restrict_split(split, "sub").train, plain.train)


def test_multi_operation_with_div_leaves_b_zero_out_of_div_only():
    task = _multi(["add", "div"], 7)
    data = task.dataset()
    assert len(data) == 49 + 42
    div_rows = data.operation == 1
    assert bool((data.pairs[div_rows, 1] != 0).all())
    for row in torch.nonzero(div_rows).flatten().tolist():
        a, b = (int(x) for x in data.pairs[row])
        assert (int(data.answers[row]) * b) % 7 == a


def test_view_holds_one_operation_and_refuses_the_ambiguous_operation():
    task = _multi(["add", "sub"], 7)
    with pytest.raises(UserError, match="several operations"):
        task.operation  # noqa: B018
    view = task.view_of("sub")
    assert view.operation.name == "sub" and view.d_vocab == task.d_vocab
    data, full = view.dataset(), task.dataset()
    assert torch.equal(data.tokens, full.tokens[49:]) and torch.equal(data.answers, full.answers[49:])
    with pytest.raises(UserError, match="mul"):
        task.view_of("mul")


def test_shared_tokens_map_operation_tokens_by_name():
    single = ModularTask(OPERATIONS["add"], 7)
    multi = _multi(["add", "sub"], 7)
    mapping = dict(multi.shared_tokens(single))
    assert mapping[7] == 7 and 8 not in mapping  # "=" kept, "=sub" is new


def _brute_nested(pairs, modulus, f, seed):
    """The nested split's definition, one shell at a time (no vectorisation)."""
    order = torch.randperm(modulus * modulus, generator=torch.Generator().manual_seed(seed)).tolist()
    rank = {cell: r for r, cell in enumerate(order)}
    rows = [(int(a), int(b)) for a, b in pairs]
    train = set()
    shells = max(max(p) for p in rows) + 1
    below = 0
    for s in range(shells):
        shell = sorted((rank[a * modulus + b], i) for i, (a, b) in enumerate(rows) if max(a, b) == s)
        quota = round(f * (below + len(shell))) - round(f * below)
        train |= {i for _, i in shell[:quota]}
        below += len(shell)
    return train


@pytest.mark.parametrize(("op", "modulus", "ranges"), [("add", 16, [4, 8, 16]), ("div", 13, [3, 7, 13])])
def test_nested_split_nests_training_sets_and_keeps_trained_pairs_out_of_later_tests(op, modulus, ranges):
    f, seed = 0.4, 5
    trained_so_far: set[tuple[int, int]] = set()
    previous_train: set[tuple[int, int]] = set()
    for r in ranges:
        task = ModularTask(OPERATIONS[op], modulus, input_range=None if r == modulus else r)
        split = task.split(f, seed=seed, nested=True)
        pairs = task.pairs()
        train = {tuple(int(x) for x in pairs[i]) for i in split.train.tolist()}
        test = {tuple(int(x) for x in pairs[i]) for i in split.test.tolist()}
        assert len(train) == round(f * task.n_pairs)  # exact size, as the plain split
        assert previous_train <= train  # nested
        assert not (test & trained_so_far)  # no test pair was trained on in this or an earlier range
        assert set(split.train.tolist()) == _brute_nested(pairs, modulus, f, seed)
        trained_so_far |= train
        previous_train = train


def test_plain_split_of_growing_ranges_is_not_nested():
    # The defect the nested split fixes: stage 1's training pairs in stage 2's test set.
    small = ModularTask(OPERATIONS["add"], 64, input_range=8)
    large = ModularTask(OPERATIONS["add"], 64, input_range=16)
    s_pairs, l_pairs = small.pairs(), large.pairs()
    trained = {tuple(int(x) for x in s_pairs[i]) for i in small.split(0.4, seed=0).train.tolist()}
    tested = {tuple(int(x) for x in l_pairs[i]) for i in large.split(0.4, seed=0).test.tolist()}
    assert trained & tested


def test_replay_samples_earlier_training_pairs_to_the_asked_fraction():
    task = _multi(["add", "sub"], 13)
    plain = task.split(0.5, seed=2)
    replayed = task.split(0.5, seed=2, replay=0.2)
    op = task.operation_index()
    current = replayed.train[op[replayed.train] == 1]
    earlier = replayed.train[op[replayed.train] == 0]
    assert torch.equal(current, plain.train[op[plain.train] == 1])  # the new task trains in full
    assert len(earlier) == round(0.2 / 0.8 * len(current))
    assert set(earlier.tolist()) <= set(plain.train.tolist())  # replayed pairs are earlier *training* pairs
    assert torch.equal(replayed.test, plain.test)  # never-trained pairs stay the test set
    with pytest.raises(UserError, match=r"task\.replay"):
        task.split(0.5, seed=2, replay=0.9)
    with pytest.raises(UserError, match="several operations"):
        ModularTask(OPERATIONS["add"], 13).split(0.5, replay=0.2)


def test_random_operation_is_a_fixed_uniform_table():
    n = 31
    task = ModularTask(OPERATIONS["random"], n)
    answers = task.dataset().answers
    again = ModularTask(OPERATIONS["random"], n).dataset().answers
    assert torch.equal(answers, again)  # the same table in every process and run
    expected = torch.randint(0, n, (n, n), generator=torch.Generator().manual_seed(0)).flatten()
    assert torch.equal(answers, expected)
    # no additive structure: (a + 1, b) is not a shift of (a, b) for most pairs, unlike add
    table = answers.view(n, n)
    assert (table.roll(1, 0) - table).remainder(n).unique().numel() > n // 2
