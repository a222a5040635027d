"""Modular-arithmetic tasks: the operations registry, the two sequence formats and seeded data splits.

An operation maps ``(a, b)`` to ``c`` in ``Z_n``. A :class:`ModularTask` turns every valid pair into a token
sequence with per-position labels:

* ``nanda``: ``[a, b, =]``; the answer is predicted at the last position. Vocabulary ``n + 1`` (``=`` is ``n``),
  output vocabulary ``n``.
* ``power``: ``[BOS, a, OP, b, EQ, c, EOS, EOS]``, next-token prediction; the loss is on the answer only (the
  logits at ``EQ``) or on every position. Vocabulary and output vocabulary ``n + 4`` (BOS, OP, EQ, EOS follow the
  numbers).

A task may hold several operations (multi-task training): each has its own operation token (``=`` / ``OP`` for the
first, so a one-operation model is the first operation's part of a multi-operation one; ``=sub``, ``OP:sub``, ...
appended to the vocabulary for the others) and the dataset holds every operation's examples, operation after
operation. Splits are drawn on the ``(a, b)`` grid and applied alike to every operation (:meth:`ModularTask.split`).

Labels use ``IGNORE = -100`` where a position carries no loss, the convention of ``torch.nn.functional.cross_entropy``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from grokscope.errors import UserError
from grokscope.losses import loss_dtype, loss_function

if TYPE_CHECKING:
    from grokscope.config import TaskConfig

IGNORE = -100


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


@dataclass(frozen=True)
class Operation:
    """A binary operation on ``Z_n``. ``fn`` works elementwise on int64 tensors and returns values in ``[0, n)``."""

    name: str
    formula: str
    fn: Callable[[Tensor, Tensor, int], Tensor]
    needs_prime: bool = False
    b_nonzero: bool = False


OPERATIONS: dict[str, Operation] = {}


def register_operation(
    name: str, formula: str, *, needs_prime: bool = False, b_nonzero: bool = False
) -> Callable[[Callable[[Tensor, Tensor, int], Tensor]], Callable[[Tensor, Tensor, int], Tensor]]:
    """Decorator adding an operation to :data:`OPERATIONS`; keep intermediate values reduced mod ``n``."""

    def add(fn: Callable[[Tensor, Tensor, int], Tensor]) -> Callable[[Tensor, Tensor, int], Tensor]:
        OPERATIONS[name] = Operation(name, formula, fn, needs_prime, b_nonzero)
        return fn

    return add


@register_operation("add", "a+b")
def _add(a: Tensor, b: Tensor, n: int) -> Tensor:
    return (a + b) % n


@register_operation("sub", "a-b")
def _sub(a: Tensor, b: Tensor, n: int) -> Tensor:
    return (a - b) % n


@register_operation("mul", "a*b")
def _mul(a: Tensor, b: Tensor, n: int) -> Tensor:
    return (a * b) % n


@register_operation("div", "a/b", needs_prime=True, b_nonzero=True)
def _div(a: Tensor, b: Tensor, n: int) -> Tensor:
    # Fermat: b^(n-2) is b's inverse mod a prime n.
    inverse = torch.tensor([pow(x, n - 2, n) for x in range(n)], dtype=torch.long, device=b.device)
    return (a * inverse[b]) % n


@register_operation("square_sum", "a^2+b^2")
def _square_sum(a: Tensor, b: Tensor, n: int) -> Tensor:
    return (a * a % n + b * b % n) % n


@register_operation("quad", "a^2+ab+b^2")
def _quad(a: Tensor, b: Tensor, n: int) -> Tensor:
    return (a * a % n + a * b % n + b * b % n) % n


@register_operation("quad_plus_a", "a^2+ab+b^2+a")
def _quad_plus_a(a: Tensor, b: Tensor, n: int) -> Tensor:
    return (_quad(a, b, n) + a) % n


@register_operation("cubic", "a^3+ab")
def _cubic(a: Tensor, b: Tensor, n: int) -> Tensor:
    return ((a * a % n) * a % n + a * b % n) % n


@register_operation("cubic_plus_b", "a^3+ab^2+b")
def _cubic_plus_b(a: Tensor, b: Tensor, n: int) -> Tensor:
    return ((a * a % n) * a % n + a * (b * b % n) % n + b) % n


RANDOM_TABLE_SEED = 0


@functools.cache
def _random_table(n: int) -> Tensor:
    return torch.randint(0, n, (n, n), generator=torch.Generator().manual_seed(RANDOM_TABLE_SEED))


@register_operation("random", "table[a,b]")
def _random(a: Tensor, b: Tensor, n: int) -> Tensor:
    # An unrelated function for task-similarity studies: a fixed table of uniform draws (seeded by
    # RANDOM_TABLE_SEED, one table per modulus), with no structure a Fourier circuit could share with the others.
    return _random_table(n).to(a.device)[a, b]


@dataclass(frozen=True)
class Dataset:
    """Every example of a task, row-aligned: the operands, the answer, the tokens, per-position labels and the
    operation (an index into the task's ``operations``)."""

    pairs: Int[Tensor, "n 2"]
    answers: Int[Tensor, " n"]
    tokens: Int[Tensor, "n n_ctx"]
    labels: Int[Tensor, "n n_ctx"]
    operation: Int[Tensor, " n"]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def _fields(self) -> tuple[Tensor, ...]:
        return (self.pairs, self.answers, self.tokens, self.labels, self.operation)

    def subset(self, index: Int[Tensor, " k"] | slice) -> Dataset:
        return Dataset(*(t[index] for t in self._fields()))

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(*(t.to(device) for t in self._fields()))


@dataclass(frozen=True)
class ModularTask:
    """``(a op b) mod modulus`` for ``a, b`` in ``[0, input_range)``, in one of the two sequence formats.

    ``operations`` is one operation, or several told apart by their operation token. ``view`` names one of them: the
    task keeps the whole vocabulary but its dataset holds only that operation's examples (per-operation analyses of
    a multi-operation model, :meth:`view_of`).
    """

    operations: Operation | tuple[Operation, ...]
    modulus: int
    format: Literal["nanda", "power"] = "nanda"
    loss_on: Literal["answer", "all"] = "answer"
    input_range: int | None = None
    view: str | None = None

    def __post_init__(self) -> None:
        ops = (self.operations,) if isinstance(self.operations, Operation) else tuple(self.operations)
        object.__setattr__(self, "operations", ops)
        n = self.modulus
        if not ops:
            raise UserError("task.operation: at least one operation")
        names = [op.name for op in ops]
        if len(set(names)) != len(names):
            raise UserError(f"task.operation: each operation once, got {names}")
        if n < 2:
            raise UserError(f"task.modulus: must be at least 2, got {n}")
        for op in ops:
            if op.needs_prime and not is_prime(n):
                raise UserError(f"task.modulus: {op.name} needs a prime modulus, got {n}")
        if self.input_range is not None and not 1 <= self.input_range <= n:
            raise UserError(f"task.input_range: must be in [1, {n}], got {self.input_range}")
        if self.format == "nanda" and self.loss_on != "answer":
            raise UserError("task.loss_on: 'all' needs format 'power'")
        if self.view is not None and self.view not in names:
            raise UserError(f"operation {self.view!r}: not one of this task's operations ({', '.join(names)})")

    @classmethod
    def from_config(cls, cfg: TaskConfig) -> ModularTask:
        names = cfg.operation if isinstance(cfg.operation, list) else [cfg.operation]
        return cls(tuple(OPERATIONS[name] for name in names), cfg.modulus, cfg.format, cfg.loss_on, cfg.input_range)

    # Operations --------------------------------------------------------------------------------------------------
    @property
    def ops(self) -> tuple[Operation, ...]:
        """Every operation of the vocabulary, in token order (``operations``, typed)."""
        return self.operations  # type: ignore[return-value]  # a tuple after __post_init__

    @property
    def operation_names(self) -> list[str]:
        return [op.name for op in self.ops]

    @property
    def is_multi(self) -> bool:
        """Several operations in the vocabulary (even when viewing one)."""
        return len(self.ops) > 1

    @property
    def operation(self) -> Operation:
        """The operation of this task's examples: the only one, or the viewed one."""
        if self.view is not None:
            return self._op(self.view)
        if len(self.ops) > 1:
            raise UserError(
                f"task.operation: this task has several operations ({', '.join(self.operation_names)}); "
                "analyses take one at a time (--operation NAME)"
            )
        return self.ops[0]

    def _op(self, name: str) -> Operation:
        return next(op for op in self.ops if op.name == name)

    def view_of(self, name: str) -> ModularTask:
        """The same vocabulary, with only operation ``name``'s examples."""
        return replace(self, view=name)

    def _dataset_ops(self) -> list[int]:
        """Indices (into ``ops``) of the operations whose examples the dataset holds, in row order."""
        return list(range(len(self.ops))) if self.view is None else [self.operation_names.index(self.view)]

    # Vocabulary and layout ------------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return 3 if self.format == "nanda" else 8

    @property
    def d_vocab(self) -> int:
        return self.modulus + (1 if self.format == "nanda" else 4) + len(self.ops) - 1

    @property
    def d_vocab_out(self) -> int:
        return self.modulus if self.format == "nanda" else self.d_vocab

    @property
    def special_tokens(self) -> dict[str, int]:
        """Names of the non-number tokens and their ids. The first operation's token is ``=`` (nanda) or ``OP``
        (power), as in a one-operation task; further operations append ``=name`` or ``OP:name``."""
        n = self.modulus
        if self.format == "nanda":
            base, op_token = {"=": n}, "="
        else:
            base, op_token = {"BOS": n, "OP": n + 1, "EQ": n + 2, "EOS": n + 3}, "OP"
        sep = "" if self.format == "nanda" else ":"
        first_free = n + len(base)
        extra = {f"{op_token}{sep}{op.name}": first_free + i for i, op in enumerate(self.ops[1:])}
        return {**base, **extra}

    def operation_token(self, index: int) -> int:
        """The token that names operation ``ops[index]``."""
        name = "=" if self.format == "nanda" else "OP"
        if index:
            name += ("" if self.format == "nanda" else ":") + self.ops[index].name
        return self.special_tokens[name]

    def shared_tokens(self, other: ModularTask, output: bool = False) -> list[tuple[int, int]]:
        """``(index here, index in other)`` for every token both vocabularies have: residues below both moduli and
        special tokens of the same name (``output``: the unembedding's vocabulary, residues only in the nanda format).
        """
        if self.format != other.format:
            raise UserError(f"task.format: cannot map tokens between the {other.format} and {self.format} formats")
        shared = [(r, r) for r in range(min(self.modulus, other.modulus))]
        if output and self.format == "nanda":
            return shared
        theirs = other.special_tokens
        return shared + [(i, theirs[name]) for name, i in self.special_tokens.items() if name in theirs]

    @property
    def answer_position(self) -> int:
        """Index of the logits that predict the answer: the last position (nanda) or ``EQ`` (power)."""
        return self.n_ctx - 1 if self.format == "nanda" else 4

    @property
    def loss_positions(self) -> tuple[int, ...]:
        """Positions whose logits carry loss, always contiguous; the labels are ``IGNORE`` everywhere else."""
        if self.loss_on == "all":
            return tuple(range(self.n_ctx - 1))
        return (self.answer_position,)

    @property
    def n_pairs(self) -> int:
        """The number of examples: valid ``(a, b)`` pairs, summed over the dataset's operations."""
        r = self.input_range or self.modulus
        return sum(r * (r - 1) if self.ops[k].b_nonzero else r * r for k in self._dataset_ops())

    # Data -------------------------------------------------------------------------------------------------------
    def grid(self) -> Int[Tensor, "g 2"]:
        """Every ``(a, b)`` in range, ``a``-major, that some operation of the task takes (``b = 0`` is left out
        only when every operation leaves it out). Splits are drawn on this grid."""
        r = self.input_range or self.modulus
        a, b = torch.cartesian_prod(torch.arange(r), torch.arange(r)).unbind(-1)
        if all(self.ops[k].b_nonzero for k in self._dataset_ops()):
            keep = b != 0
            a, b = a[keep], b[keep]
        return torch.stack([a, b], dim=-1)

    def _rows_on_grid(self) -> list[tuple[int, Tensor]]:
        """Per operation of the dataset (in row order): its index in ``ops`` and the grid rows it takes."""
        grid = self.grid()
        every, b_nonzero = torch.arange(len(grid)), torch.nonzero(grid[:, 1] != 0).flatten()
        return [(k, b_nonzero if self.ops[k].b_nonzero else every) for k in self._dataset_ops()]

    def pairs(self) -> Int[Tensor, "n 2"]:
        """``(a, b)`` of every example, operation after operation; within one, ``a``-major (``b`` fastest)."""
        grid = self.grid()
        return torch.cat([grid[rows] for _, rows in self._rows_on_grid()])

    def operation_index(self) -> Int[Tensor, " n"]:
        """Each example's operation, as an index into ``ops``."""
        return torch.cat([torch.full((len(rows),), k, dtype=torch.long) for k, rows in self._rows_on_grid()])

    def answers(self, pairs: Int[Tensor, "n 2"], operation: Int[Tensor, " n"] | None = None) -> Int[Tensor, " n"]:
        """``a op b`` per row; ``operation`` (indices into ``ops``) is needed only when the task has several."""
        if operation is None:
            return self.operation.fn(pairs[:, 0], pairs[:, 1], self.modulus)
        out = torch.zeros(len(pairs), dtype=torch.long)
        for k, op in enumerate(self.ops):
            rows = operation == k
            if rows.any():
                out[rows] = op.fn(pairs[rows, 0], pairs[rows, 1], self.modulus)
        return out

    def dataset(self) -> Dataset:
        pairs, operation = self.pairs(), self.operation_index()
        c = self.answers(pairs, operation)
        a, b = pairs[:, 0], pairs[:, 1]
        size = len(c)
        op_token = torch.tensor([self.operation_token(k) for k in range(len(self.ops))])[operation]
        if self.format == "nanda":
            tokens = torch.stack([a, b, op_token], dim=-1)
            labels = torch.full_like(tokens, IGNORE)
            labels[:, -1] = c
        else:
            sp = self.special_tokens

            def const(token: int) -> Tensor:
                return torch.full((size,), token, dtype=torch.long)

            tokens = torch.stack(
                [const(sp["BOS"]), a, op_token, b, const(sp["EQ"]), c, const(sp["EOS"]), const(sp["EOS"])], dim=-1
            )
            labels = torch.full_like(tokens, IGNORE)
            positions = list(self.loss_positions)
            labels[:, positions] = tokens[:, [p + 1 for p in positions]]
        return Dataset(pairs, c, tokens, labels, operation)

    # Splits -----------------------------------------------------------------------------------------------------
    def split(
        self,
        train_fraction: float,
        val_fraction: float = 0.0,
        seed: int = 0,
        *,
        nested: bool = False,
        replay: float | None = None,
    ) -> Split:
        """A seeded split of the dataset, drawn on the ``(a, b)`` grid and applied alike to every operation.

        ``nested``: :func:`make_nested_split` (training sets nested across input ranges), else :func:`make_split`
        (for one operation, exactly the plain split of its examples). ``replay``: the operations before the last
        are earlier tasks replayed; only a seeded sample of their training pairs trains, sized so that they make
        this fraction of the training set (their other training pairs are left out of every part: they were
        trained on before, so they are no test).
        """
        if self.view is not None:
            raise UserError(f"operation {self.view}: split the whole task, then restrict it (restrict_split)")
        grid = self.grid()
        if nested:
            cell = make_nested_split(grid, self.modulus, train_fraction, val_fraction, seed)
        else:
            cell = make_split(len(grid), train_fraction, val_fraction, seed)
        part = torch.full((len(grid),), 2, dtype=torch.long)  # 0 train, 1 val, 2 test
        part[cell.train], part[cell.val] = 0, 1
        row_part = torch.cat([part[rows] for _, rows in self._rows_on_grid()])
        index = torch.arange(len(row_part))
        train, val, test = (index[row_part == i] for i in range(3))
        if replay is not None:
            train = self._replayed(train, replay, seed)
        if len(train) < 1 or len(test) < 1:
            raise UserError(
                f"task.train_fraction: {train_fraction} of {len(row_part)} examples leaves an empty train or test set"
            )
        return Split(train=train, test=test, val=val)

    def _replayed(self, train: Int[Tensor, " k"], fraction: float, seed: int) -> Int[Tensor, " m"]:
        if not self.is_multi:
            raise UserError("task.replay: needs several operations (the earlier ones are replayed)")
        operation = self.operation_index()[train]
        last = len(self.ops) - 1
        current, earlier = train[operation == last], train[operation != last]
        wanted = round(fraction / (1 - fraction) * len(current))
        if wanted < 1:  # the earlier operations would not be replayed at all, and their accuracy would be over nothing
            smallest = _smallest_replay(len(current))
            raise UserError(
                f"task.replay: {fraction:g} of the training set rounds to no earlier-task training pair (beside "
                f"{len(current)} of {self.ops[last].name}); the smallest share that replays one pair is {smallest:.3g}"
            )
        if wanted > len(earlier):
            raise UserError(
                f"task.replay: {fraction} of the training set needs {wanted} earlier-task training pairs, "
                f"only {len(earlier)} exist"
            )
        # A stream of its own, so the replayed sample is not the split's permutation read again.
        generator = torch.Generator().manual_seed(seed * 1_000_033 + 7)
        sample = earlier[torch.randperm(len(earlier), generator=generator)[:wanted]]
        return torch.cat([sample, current]).sort().values

    def restrict_split(self, split: Split, name: str) -> Split:
        """``split`` (of this whole task) as a split of :meth:`view_of` ``(name)``'s dataset."""
        if self.view is not None:
            raise UserError(f"operation {name}: restrict a split of the whole task, not of a view")
        index = self.operation_names.index(name)
        sizes = [len(rows) for _, rows in self._rows_on_grid()]
        start = sum(sizes[:index])
        stop = start + sizes[index]

        def pick(t: Tensor) -> Tensor:
            return t[(t >= start) & (t < stop)] - start

        return Split(train=pick(split.train), test=pick(split.test), val=pick(split.val))

    # The loss ---------------------------------------------------------------------------------------------------
    def loss(
        self,
        logits: Float[Tensor, "batch n_ctx d_vocab_out"],
        labels: Int[Tensor, "batch n_ctx"],
        dtype: torch.dtype = torch.float32,
        reduction: str = "mean",
        loss_fn: str = "softmax",
    ) -> Tensor:
        """The training objective: cross-entropy over the loss positions, computed in ``dtype`` (or the logits' own
        dtype when that is wider, as the trainer does).

        ``loss_fn`` names the objective (:data:`grokscope.losses.LOSS_FUNCTIONS`, a run's ``train.loss_fn``:
        softmax or StableMax cross-entropy). float64, as Nanda et al. use, keeps tiny losses resolvable late in
        training.
        """
        objective = loss_function(loss_fn)
        positions = self.loss_positions
        # Loss positions are contiguous (one answer, or every position but the last): a slice is a view, not a copy.
        window = slice(positions[0], positions[-1] + 1)
        picked = logits[:, window].to(loss_dtype(dtype, logits.dtype))
        return objective(picked.flatten(0, 1), labels[:, window].flatten(), reduction=reduction)

    def describe(self) -> str:
        r = f", a,b < {self.input_range}" if self.input_range else ""
        formula = " | ".join(op.formula for op in self.ops)
        view = f" (examples of {self.view} only)" if self.view else ""
        return f"({formula}) mod {self.modulus}{r}, {self.format} format, loss on {self.loss_on}{view}"


@dataclass(frozen=True)
class Split:
    """Indices into a task's :meth:`ModularTask.dataset`; ``val`` may be empty."""

    train: Int[Tensor, " n_train"]
    test: Int[Tensor, " n_test"]
    val: Int[Tensor, " n_val"]

    def as_dict(self) -> dict[str, Tensor]:
        return {"train": self.train, "test": self.test, "val": self.val}


def make_split(n_examples: int, train_fraction: float, val_fraction: float = 0.0, seed: int = 0) -> Split:
    """A seeded random split: ``round(f * n)`` training and validation examples, the rest for testing."""
    n_train = round(train_fraction * n_examples)
    n_val = round(val_fraction * n_examples)
    if n_train < 1 or n_examples - n_train - n_val < 1:
        raise UserError(
            f"task.train_fraction: {train_fraction} of {n_examples} examples leaves an empty train or test set"
        )
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed))
    return Split(
        train=order[:n_train].sort().values,
        test=order[n_train + n_val :].sort().values,
        val=order[n_train : n_train + n_val].sort().values,
    )


def make_nested_split(
    pairs: Int[Tensor, "n 2"], modulus: int, train_fraction: float, val_fraction: float = 0.0, seed: int = 0
) -> Split:
    """A seeded split whose training sets nest across input ranges (curricula over growing ranges).

    Every ``(a, b)`` of the full ``modulus`` grid gets one seeded random priority, whatever the range. The pairs of
    range ``r`` are the shells ``max(a, b) = s`` for ``s < r``; the training set of range ``r`` takes, shell by
    shell, the highest-priority ``round(f N(s+1)) - round(f N(s))`` pairs of shell ``s`` (``N(s)``: the pairs below
    shell ``s``). It therefore holds exactly ``round(f N(r))`` pairs and, for every smaller range, that range's
    whole training set; a test pair of any range was trained on in no range at or below it. Validation pairs are
    the highest-priority ``round(f_val N(r))`` of the rest (not nested).
    """
    n = len(pairs)
    n_train, n_val = round(train_fraction * n), round(val_fraction * n)
    if n_train < 1 or n - n_train - n_val < 1:
        raise UserError(f"task.train_fraction: {train_fraction} of {n} examples leaves an empty train or test set")
    rank = torch.empty(modulus * modulus, dtype=torch.long)
    rank[torch.randperm(modulus * modulus, generator=torch.Generator().manual_seed(seed))] = torch.arange(modulus**2)
    priority = rank[pairs[:, 0] * modulus + pairs[:, 1]]
    shell = pairs.max(dim=1).values
    below = torch.bincount(shell, minlength=int(shell.max()) + 1).cumsum(0)  # N(s+1): pairs in shells <= s
    cumulative = torch.tensor([round(train_fraction * int(x)) for x in below])  # round(f N(s+1)), as make_split
    quota = cumulative - torch.cat([cumulative.new_zeros(1), cumulative[:-1]])
    order = torch.argsort(shell * modulus * modulus + priority)  # by shell, then priority
    first = torch.cat([below.new_zeros(1), below[:-1]])  # index of each shell's first pair in ``order``
    place = torch.arange(n) - first[shell[order]]
    is_train = torch.zeros(n, dtype=torch.bool)
    is_train[order] = place < quota[shell[order]]
    rest = torch.nonzero(~is_train).flatten()
    rest = rest[torch.argsort(priority[rest])]
    return Split(
        train=torch.nonzero(is_train).flatten(),
        test=rest[n_val:].sort().values,
        val=rest[:n_val].sort().values,
    )


def _smallest_replay(n_current: int) -> float:
    """The smallest share with 3 significant digits that replays at least one pair beside ``n_current`` pairs of the
    last operation: ``round(f / (1 - f) * n_current) >= 1``, so ``f`` just above ``1 / (2 n_current + 1)``."""
    bound = 1 / (2 * n_current + 1)
    unit = 10.0 ** (math.floor(math.log10(bound)) - 2)
    share = math.ceil(bound / unit) * unit
    while round(share / (1 - share) * n_current) < 1:  # Python rounds 0.5 down to 0: the bound itself is too small
        share += unit
    return float(f"{share:.3g}")


def task_split(cfg: TaskConfig, seed: int) -> Split:
    """The split a run of task config ``cfg`` trains with (``seed``: the run's split seed)."""
    task = ModularTask.from_config(cfg)
    nested = cfg.split == "nested"
    return task.split(cfg.train_fraction, cfg.val_fraction, seed, nested=nested, replay=cfg.replay)
