"""Modular-arithmetic tasks: the operations registry, the two sequence formats and seeded data splits.

An operation maps ``(a, b)`` to ``c`` in ``Z_n``. A :class:`ModularTask` turns every valid pair into a token
sequence with per-position labels:

* ``nanda``: ``[a, b, =]``; the answer is predicted at the last position. Vocabulary ``n + 1`` (``=`` is ``n``),
  output vocabulary ``n``.
* ``power``: ``[BOS, a, OP, b, EQ, c, EOS, EOS]``, next-token prediction; the loss is on the answer only (the
  logits at ``EQ``) or on every position. Vocabulary and output vocabulary ``n + 4`` (BOS, OP, EQ, EOS follow the
  numbers).

Labels use ``IGNORE = -100`` where a position carries no loss, the convention of ``torch.nn.functional.cross_entropy``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Dataset:
    """Every example of a task, row-aligned: the operands, the answer, the tokens and per-position labels."""

    pairs: Int[Tensor, "n 2"]
    answers: Int[Tensor, " n"]
    tokens: Int[Tensor, "n n_ctx"]
    labels: Int[Tensor, "n n_ctx"]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def subset(self, index: Int[Tensor, " k"]) -> Dataset:
        return Dataset(self.pairs[index], self.answers[index], self.tokens[index], self.labels[index])

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(*(t.to(device) for t in (self.pairs, self.answers, self.tokens, self.labels)))


@dataclass(frozen=True)
class ModularTask:
    """``(a op b) mod modulus`` for ``a, b`` in ``[0, input_range)``, in one of the two sequence formats."""

    operation: Operation
    modulus: int
    format: Literal["nanda", "power"] = "nanda"
    loss_on: Literal["answer", "all"] = "answer"
    input_range: int | None = None

    def __post_init__(self) -> None:
        n = self.modulus
        if n < 2:
            raise UserError(f"task.modulus: must be at least 2, got {n}")
        if self.operation.needs_prime and not is_prime(n):
            raise UserError(f"task.modulus: {self.operation.name} needs a prime modulus, got {n}")
        if self.input_range is not None and not 1 <= self.input_range <= n:
            raise UserError(f"task.input_range: must be in [1, {n}], got {self.input_range}")
        if self.format == "nanda" and self.loss_on != "answer":
            raise UserError("task.loss_on: 'all' needs format 'power'")

    @classmethod
    def from_config(cls, cfg: TaskConfig) -> ModularTask:
        return cls(OPERATIONS[cfg.operation], cfg.modulus, cfg.format, cfg.loss_on, cfg.input_range)

    # Vocabulary and layout ------------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return 3 if self.format == "nanda" else 8

    @property
    def d_vocab(self) -> int:
        return self.modulus + (1 if self.format == "nanda" else 4)

    @property
    def d_vocab_out(self) -> int:
        return self.modulus if self.format == "nanda" else self.d_vocab

    @property
    def special_tokens(self) -> dict[str, int]:
        n = self.modulus
        if self.format == "nanda":
            return {"=": n}
        return {"BOS": n, "OP": n + 1, "EQ": n + 2, "EOS": n + 3}

    def shared_tokens(self, other: ModularTask, output: bool = False) -> list[tuple[int, int]]:
        """``(index here, index in other)`` for every token both vocabularies have: residues below both moduli and
        special tokens of the same name (``output``: the unembedding's vocabulary, residues only in the nanda format).
        """
        if self.format != other.format:
            raise UserError(f"task.format: cannot map tokens between the {other.format} and {self.format} formats")
        shared = [(r, r) for r in range(min(self.modulus, other.modulus))]
        if output and self.format == "nanda":
            return shared
        return shared + [(i, other.special_tokens[name]) for name, i in self.special_tokens.items()]

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
        r = self.input_range or self.modulus
        return r * (r - 1) if self.operation.b_nonzero else r * r

    # Data -------------------------------------------------------------------------------------------------------
    def pairs(self) -> Int[Tensor, "n 2"]:
        """All valid ``(a, b)``, ``a``-major (``b`` varies fastest); ``b = 0`` is left out where it must be."""
        r = self.input_range or self.modulus
        a, b = torch.cartesian_prod(torch.arange(r), torch.arange(r)).unbind(-1)
        if self.operation.b_nonzero:
            keep = b != 0
            a, b = a[keep], b[keep]
        return torch.stack([a, b], dim=-1)

    def answers(self, pairs: Int[Tensor, "n 2"]) -> Int[Tensor, " n"]:
        return self.operation.fn(pairs[:, 0], pairs[:, 1], self.modulus)

    def dataset(self) -> Dataset:
        pairs = self.pairs()
        c = self.answers(pairs)
        a, b = pairs[:, 0], pairs[:, 1]
        size = len(c)
        if self.format == "nanda":
            eq = torch.full_like(a, self.special_tokens["="])
            tokens = torch.stack([a, b, eq], dim=-1)
            labels = torch.full_like(tokens, IGNORE)
            labels[:, -1] = c
        else:
            sp = self.special_tokens

            def const(token: int) -> Tensor:
                return torch.full((size,), token, dtype=torch.long)

            tokens = torch.stack(
                [
                    const(sp["BOS"]),
                    a,
                    const(sp["OP"]),
                    b,
                    const(sp["EQ"]),
                    c,
                    const(sp["EOS"]),
                    const(sp["EOS"]),
                ],
                dim=-1,
            )
            labels = torch.full_like(tokens, IGNORE)
            positions = list(self.loss_positions)
            labels[:, positions] = tokens[:, [p + 1 for p in positions]]
        return Dataset(pairs, c, tokens, labels)

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
        return f"({self.operation.formula}) mod {self.modulus}{r}, {self.format} format, loss on {self.loss_on}"


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
