"""Run configuration: pydantic models for every section, YAML/TOML loading, ``--set`` overrides.

A config names everything that decides a run's result. Unknown keys are rejected, presets are resolved
on load (so the ``config.yaml`` written beside a run has every value spelled out), and every mistake
becomes a one-line :class:`~grokscope.errors.UserError` naming the field.
"""

from __future__ import annotations

import copy
import errno
import re
import reprlib
import stat
import tomllib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grokscope.errors import UserError
from grokscope.tasks import OPERATIONS, is_prime

# A dataset holds modulus**2 pairs, so a modulus this large could never be trained (2**48 pairs); the bound also
# keeps the primality test of ``div`` (trial division) instant and the memory estimates' numbers readable.
MAX_MODULUS = 2**24

# Every other count (steps, sizes, intervals) fits int64, as torch and the checkpoints hold it; the bound also keeps
# the memory estimates, which work in floats, from overflowing on a number of hundreds of digits.
MAX_INT = 2**63 - 1

# Torch converts the optimizer's scalars to float32 (largest ~3.4e38) inside its kernels and fails with "value cannot
# be converted to type float without overflow" beyond that. These bounds are far above any useful value (a larger
# one only makes training diverge, which a run reports) and far enough below 3.4e38 that nothing overflows:
FLOAT32_SAFE = 1e30  # weight_decay, eps, grad_clip, Grokfast's lamb: used (about) as given
# Adam's first step moves by lr / (1 - beta1), and 1 - beta1 can be as small as ~1.1e-16 (float64 just below 1):
# 1e20 / 1.1e-16 ~ 1e36 still fits float32.
MAX_LR = 1e20

# How deep and how big a config value may be. A run config is four levels deep with ~50 values; the limits reject
# what no config needs before pydantic, repr or copy walk it: a value nested past Python's recursion limit, and a
# YAML alias bomb ("billion laughs": anchors referring to anchors expand exponentially).
MAX_DEPTH = 100
MAX_VALUES = 100_000
TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels)"
TOO_BIG = f"too many values (more than {MAX_VALUES:,} once YAML aliases are expanded)"
RECURSIVE = "a value contains itself (a YAML alias inside its own anchor)"

MetricName = Literal["train_acc", "test_acc", "val_acc", "train_loss", "test_loss", "val_loss"]
RUN_METRICS: tuple[str, ...] = get_args(MetricName)
# A per-operation metric, as the loop logs it for a multi-operation task: test_acc_sub is test_acc over sub's rows.
_PER_OPERATION = re.compile(r"(?P<base>(?:train|test|val)_(?:acc|loss))_(?P<op>.+)")
PER_OPERATION_FORM = "{train,test,val}_{acc,loss}_<operation>"


def split_metric(metric: str) -> tuple[str, str | None]:
    """``("test_acc", None)`` for a run-wide metric, ``("test_acc", "sub")`` for the per-operation ``test_acc_sub``.

    Raises ValueError for anything else, naming the metrics there are."""
    if metric in RUN_METRICS:
        return metric, None
    match = _PER_OPERATION.fullmatch(metric)
    if match is None or match["op"] not in OPERATIONS:
        raise ValueError(
            f"unknown metric {show(metric)}: expected one of {', '.join(RUN_METRICS)}, "
            f"or {PER_OPERATION_FORM} (e.g. test_acc_sub)"
        )
    return match["base"], match["op"]


def _numeric_kind(annotation: Any) -> str | None:
    """ "an integer" or "a number" when ``annotation`` takes one (``int``, ``float | None``, ``Annotated[int, ...]``),
    else None."""
    if typing.get_origin(annotation) is Annotated:
        return _numeric_kind(get_args(annotation)[0])
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [k for a in get_args(annotation) if (k := _numeric_kind(a)) is not None]
        return "an integer" if kinds == ["an integer"] else (kinds[0] if kinds else None)
    return None


def boolean_for_number(model: type[BaseModel], data: Any) -> str | None:
    """``field: expected an integer, got true`` when ``data`` gives a boolean to a number field of ``model`` (itself,
    or an item of a list or tuple of numbers), else None.

    Pydantic reads ``true`` as 1 (and 1.0), so ``train.steps: true`` would train one step: a boolean is no number.
    """
    if not isinstance(data, dict):
        return None
    for name, info in model.model_fields.items():
        value = data.get(info.alias or name, data.get(name))
        annotation = info.annotation
        if isinstance(value, bool):
            kind = _numeric_kind(annotation)
            if kind is not None:
                return f"{name}: expected {kind}, got {str(value).lower()}"
        elif isinstance(value, list | tuple):
            origin, args = typing.get_origin(annotation), get_args(annotation)
            if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # list[int] | None
                inner = [a for a in args if typing.get_origin(a) in (list, tuple)]
                origin, args = (typing.get_origin(inner[0]), get_args(inner[0])) if inner else (None, ())
            if origin not in (list, tuple):
                continue
            for i, item in enumerate(value):
                item_type = args[0] if origin is list or Ellipsis in args else (args[i] if i < len(args) else None)
                kind = _numeric_kind(item_type) if args else None
                if isinstance(item, bool) and kind is not None:
                    return f"{name}: item {i}: expected {kind}, got {str(item).lower()}"
    return None


def not_an_option(name: str) -> str:
    """``name`` (of a run or experiment folder), unless it starts with ``-``: such a folder reads as an option to every
    command given its path (``rm -rf``, ``grokscope analyze -rf``)."""
    if name.startswith("-"):
        raise ValueError(
            f"must not start with '-' (a folder named so reads as a command-line option), got {show(name)}"
        )
    return name


class _Section(BaseModel):
    # allow_inf_nan=False: every float field (bounds or not) rejects inf, -inf and nan, however they are spelled.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        problem = boolean_for_number(cls, data)
        if problem is not None:
            raise ValueError(problem)
        return data


class TaskConfig(_Section):
    """What the model learns: ``(a op b) mod modulus`` in a sequence format, and how the data is split."""

    operation: str | list[str] = Field(
        "add", description="an operation, or a list of them trained together (each with its own operation token)"
    )
    modulus: int = Field(113, ge=2, le=MAX_MODULUS)
    format: Literal["nanda", "power"] = "nanda"
    loss_on: Literal["answer", "all"] = "answer"
    train_fraction: float = Field(0.3, gt=0, lt=1)
    val_fraction: float = Field(0.0, ge=0, lt=1)
    input_range: int | None = Field(None, ge=1, le=MAX_MODULUS, description="restrict a, b to [0, input_range)")
    split_seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="seed of the train/test split; null: the run's seed"
    )
    split: Literal["random", "nested"] = Field(
        "random",
        description="random: a seeded draw; nested: training sets nested across input ranges, so a curriculum's "
        "test pairs were trained on in no earlier stage (grokscope.tasks.make_nested_split)",
    )
    replay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="with several operations: the earlier ones (all but the last) are replayed, a seeded sample "
        "of their training pairs making this fraction of the training set",
    )

    @field_validator("operation")
    @classmethod
    def _one_name_or_a_list(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("a list needs at least one operation")
            if len(set(value)) != len(value):
                raise ValueError(f"each operation once, got {show(value)}")
            if len(value) == 1:  # one operation: the plain task, written as such in config.yaml
                return value[0]
        return value

    @property
    def operations(self) -> list[str]:
        return self.operation if isinstance(self.operation, list) else [self.operation]

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        # Runs after the field constraints: the modulus is at most MAX_MODULUS here, so is_prime is instant.
        for name in self.operations:
            op = OPERATIONS.get(name)
            if op is None:
                raise ValueError(f"operation: unknown operation {show(name)} (known: {', '.join(OPERATIONS)})")
            if op.needs_prime and not is_prime(self.modulus):
                raise ValueError(f"modulus: {name} needs a prime modulus, got {self.modulus}")
        if self.replay is not None and len(self.operations) < 2:
            raise ValueError("replay: needs several operations (the earlier ones are replayed while the last trains)")
        if self.input_range is not None and self.input_range > self.modulus:
            raise ValueError(f"input_range: {self.input_range} exceeds the modulus {self.modulus}")
        if self.format == "nanda" and self.loss_on == "all":
            raise ValueError("loss_on: 'all' needs format 'power' (the nanda format has one answer position)")
        if self.train_fraction + self.val_fraction >= 1:
            raise ValueError("train_fraction + val_fraction must leave a test set (sum < 1)")
        return self


Normalization = Literal["none", "LN", "LNPre", "RMS", "RMSPre"]
Component = Literal["embed", "pos_embed", "attn", "mlp", "unembed", "norm"]

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # Nanda et al. (2023): one layer, no LayerNorm, ReLU MLP.
    "nanda": dict(n_layers=1, d_model=128, n_heads=4, d_head=32, d_mlp=512, act_fn="relu", normalization="none"),
    # Power et al. (2022)-style decoder for the 8-token format.
    "power": dict(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, act_fn="relu", normalization="LN"),
}


class ModelConfig(_Section):
    """A :class:`~grokscope.models.GrokTransformer`: a preset, any field of which can be overridden. Vocab and context
    come from the task."""

    preset: Literal["nanda", "power"] = "nanda"
    n_layers: int | None = Field(None, ge=1, le=MAX_INT)
    d_model: int | None = Field(None, ge=1, le=MAX_INT)
    n_heads: int | None = Field(None, ge=1, le=MAX_INT)
    d_head: int | None = Field(None, ge=1, le=MAX_INT)
    d_mlp: int | None = Field(None, ge=1, le=MAX_INT)
    act_fn: Literal["relu", "gelu", "silu", "gelu_new"] | None = None
    normalization: Normalization | None = None
    dtype: Literal["float32", "float64"] = "float32"
    init_perturbation: float = Field(
        0.0, ge=0, description="add eps x (each tensor's RMS) x N(0, 1) noise to the initial weights"
    )
    perturbation_seed: int = Field(0, ge=0, le=2**32 - 1)
    init_from: str | None = Field(
        None,
        description="a checkpoint (.safetensors) whose weights start the run; when the task's vocabulary differs, "
        "shared residues and special tokens keep their rows (see grokscope.models.transplant)",
    )

    @model_validator(mode="after")
    def _fill_from_preset(self) -> ModelConfig:
        for name, value in MODEL_PRESETS[self.preset].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        return self

    def components(self) -> list[Component]:
        """The ``optim.freeze`` components this model has parameters in (``norm``: only LN and RMS have weights;
        the ``*Pre`` normalizations and ``none`` have none). Mirrors ``grokscope.models.COMPONENTS``."""
        always: list[Component] = ["embed", "pos_embed", "attn", "mlp", "unembed"]
        return [*always, "norm"] if self.normalization in ("LN", "RMS") else always


class GrokfastConfig(_Section):
    """Grokfast (Lee et al. 2024): add ``lamb`` x the slow part of each gradient (an EMA, or a moving average)."""

    filter: Literal["ema", "ma"] = "ema"
    alpha: float = Field(0.98, ge=0, lt=1, description="EMA decay (filter: ema)")
    lamb: float = Field(2.0, ge=0, le=FLOAT32_SAFE, description="amplification of the slow gradient")
    window: int = Field(100, ge=1, le=MAX_INT, description="moving-average length in steps (filter: ma)")


class OptimConfig(_Section):
    """AdamW with a linear warmup, optional gradient clipping and grokking accelerators (applied in that order)."""

    # The upper bounds keep every scalar torch computes from these within float32 (see FLOAT32_SAFE, MAX_LR).
    lr: float = Field(1e-3, gt=0, le=MAX_LR)
    weight_decay: float = Field(1.0, ge=0, le=FLOAT32_SAFE)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0, le=FLOAT32_SAFE)
    warmup_steps: int = Field(10, ge=0, le=MAX_INT)
    grad_clip: float | None = Field(
        None, gt=0, le=FLOAT32_SAFE, description="max global gradient norm; none = no clipping"
    )
    orthograd: bool = Field(False, description="⊥Grad (Prieto et al. 2025): drop the gradient part parallel to W")
    grokfast: GrokfastConfig | None = None
    freeze: list[Component] = Field(default_factory=list, description="parts that keep their initial weights")

    def accelerators(self) -> list[str]:
        """What this optimizer adds to plain AdamW, for the run summary (empty: none)."""
        out = ["orthograd"] if self.orthograd else []
        g = self.grokfast
        if g is not None:
            out.append(
                f"grokfast_ema(alpha={g.alpha}, lamb={g.lamb})"
                if g.filter == "ema"
                else f"grokfast_ma(window={g.window}, lamb={g.lamb})"
            )
        return out

    @model_validator(mode="after")
    def _check_betas(self) -> OptimConfig:
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: each must be in [0, 1), got {list(self.betas)}")
        return self


class CheckpointSchedule(_Section):
    """Checkpoints at step 0, every ``dense_every`` steps up to ``dense_until``, then every ``every``, and at the
    end."""

    every: int = Field(1000, ge=1, le=MAX_INT)
    dense_every: int = Field(100, ge=1, le=MAX_INT)
    dense_until: int = Field(0, ge=0, le=MAX_INT)

    def due(self, step: int) -> bool:
        if step == 0 or step % self.every == 0:
            return True
        return step <= self.dense_until and step % self.dense_every == 0


class EarlyStopConfig(_Section):
    """Stop once ``metric`` has been at or past ``threshold`` for ``patience`` steps.

    Accuracies must reach at least the threshold, losses at most it. ``metric`` is run-wide (``test_acc``: every
    operation's rows) or one operation's (``test_acc_sub``: sub's rows only), which the run's task must train. A
    single-operation task's ``test_acc_<its op>`` is its ``test_acc``, so one rule (``test_acc_sub >= 0.999``) means
    the same on a plain task (sub) and on its replay twin (add replayed beside sub), whose ``test_acc`` would also
    count the held-out add pairs.
    """

    metric: str = Field("test_acc", description=f"{', '.join(RUN_METRICS)}, or {PER_OPERATION_FORM}")
    threshold: float = 0.99
    patience: int = Field(1000, ge=0, le=MAX_INT)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        split_metric(metric)
        return metric

    @property
    def operation(self) -> str | None:
        """The operation whose rows ``metric`` is measured on; None for a run-wide metric."""
        return split_metric(self.metric)[1]

    def met(self, value: float) -> bool:
        kind = split_metric(self.metric)[0]
        return value >= self.threshold if kind.endswith("_acc") else value <= self.threshold

    def row_key(self, operations: Sequence[str]) -> str:
        """The metrics.jsonl key holding ``metric`` in a run of a task with these ``operations``.

        The loop logs per-operation columns only for several operations (one operation's column would repeat the
        run-wide one in every row, the progress bar and every reader of metrics.jsonl), so for a single-operation
        task ``test_acc_<op>`` is read from ``test_acc``."""
        base, op = split_metric(self.metric)
        return base if op is not None and list(operations) == [op] else self.metric


class TrainConfig(_Section):
    """The loop: how long, how big a batch, how often to evaluate and save, when to stop early."""

    steps: int = Field(1000, ge=1, le=MAX_INT)
    batch_size: int | None = Field(None, ge=1, le=MAX_INT, description="none = full batch")
    eval_every: int = Field(10, ge=1, le=MAX_INT)
    loss_dtype: Literal["float32", "float64"] = "float32"
    tf32: bool = Field(False, description="TF32 matmuls on CUDA: faster, ~1e-3 relative precision per product")
    loss_fn: Literal["softmax", "stablemax"] = Field(
        "softmax", description="cross-entropy over softmax, or StableMax (Prieto et al. 2025)"
    )
    checkpoints: CheckpointSchedule = Field(default_factory=CheckpointSchedule)
    early_stop: EarlyStopConfig | None = None


class RunConfig(_Section):
    """Everything that decides a training run. ``seed`` drives the init, batch order and (by default) the split."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        # "." or ".." would point a run directory at its parents (and --overwrite at everything in them).
        if set(name) == {"."}:
            raise ValueError(f"must name a folder, not {show(name)}")
        return not_an_option(name)

    @property
    def split_seed(self) -> int:
        """The seed of the data split: ``task.split_seed``, or the run seed when that is null."""
        return self.seed if self.task.split_seed is None else self.task.split_seed

    @model_validator(mode="after")
    def _check_early_stop(self) -> RunConfig:
        early = self.train.early_stop
        if early is not None and early.metric.startswith("val") and self.task.val_fraction == 0:
            raise ValueError("train.early_stop.metric: a val_* metric needs task.val_fraction > 0")
        if early is not None and early.operation not in (None, *self.task.operations):
            raise ValueError(
                f"train.early_stop.metric: {early.metric} is measured on operation {early.operation}, which this "
                f"task does not train (its operations: {', '.join(self.task.operations)})"
            )
        return self

    @model_validator(mode="after")
    def _check_something_trains(self) -> RunConfig:
        components = self.model.components()
        if set(components) <= set(self.optim.freeze):
            raise ValueError(
                f"optim.freeze: freezes every component of this model ({', '.join(components)}); nothing would train"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_seed(self, seed: int) -> RunConfig:
        """The same run with another seed; the split follows it unless ``task.split_seed`` pins it.

        A seed out of range is a :class:`UserError` naming ``seed`` (seeds often come from the command line)."""
        return parse_config({**self.to_dict(), "seed": seed}, source=self.name)


class _ShortRepr(reprlib.Repr):
    """``reprlib`` with small limits, and ints and bytes that are never converted whole."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxarray = 4
        self.maxstring = self.maxother = 60
        self.maxlong = 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # str() of a huge int is slow, and fails past 4300 digits
            return f"{'-' if x < 0 else ''}an integer of {x.bit_length():,} bits"
        return super().repr_int(x, level)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x[: self.maxstring]) + ("..." if len(x) > self.maxstring else "")


_short_repr = _ShortRepr()
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message: bounded in time and length (a value may be a huge or deeply nested
    structure, or an alias bomb's DAG), and on one line."""
    try:
        text = _short_repr.repr(value)
    except Exception:  # a repr that fails is no reason to lose the error it decorates
        text = f"a {type(value).__name__}"
    text = _one_line_text(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line_text(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (a key may hold anything)."""
    return _LINE_BREAKS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _field_name(part: Any) -> str:
    """A field name or dotted path for a message: as it is when plain, else bounded, quoted and on one line
    (an unknown key or a ``--set`` key is whatever the user typed)."""
    if isinstance(part, int) or (isinstance(part, str) and re.fullmatch(r"[\w.-]{1,100}", part)):
        return str(part)
    return show(part, 60)


# A message that starts by naming a field ("modulus: ...", "train.early_stop.metric: ...") extends the location.
_NAMES_A_FIELD = re.compile(r"[A-Za-z_][\w.]*: ")


def first_error(err: ValidationError) -> str:
    """The first validation error as ``field.path: what is wrong``, on one line and bounded in length."""
    e = err.errors(include_url=False)[0]
    where = ".".join(_field_name(part) for part in e["loc"])
    msg = _one_line_text(e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, "))
    if e["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if e["type"] in ("value_error", "assertion_error"):
        # Cross-field checks name the field themselves, relative to the section; field checks leave it to loc.
        if not where:
            return msg
        return f"{where}.{msg}" if _NAMES_A_FIELD.match(msg) else f"{where}: {msg}"
    bound = next(iter(e.get("ctx", {}).values()), None) if e["type"] in _BOUND_ERRORS else None
    if isinstance(bound, float) and abs(bound) >= 1e6:  # pydantic spells 1e20 out in 21 digits
        msg = re.sub(r"\d{7,}(\.\d*)?$", f"{bound:g}", msg)
    return f"{where}: {msg} (got {show(e.get('input'), 60)})"


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def parse_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict into a :class:`RunConfig`; errors name ``source`` and the field."""
    source = _one_line_text(source)  # a file name may hold a line break
    problem = nesting_problem(data)
    if problem is not None:
        raise UserError(f"{source}: {problem}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{source}: {first_error(err)}") from None
    except RecursionError:  # nesting_problem bounds the depth; this is a last resort, never a traceback
        raise UserError(f"{source}: {TOO_DEEP}") from None


def nesting_problem(value: Any) -> str | None:
    """What makes ``value`` too deep or too big to validate (:data:`MAX_DEPTH`, :data:`MAX_VALUES`), or None.

    Walks lists, tuples and dicts (keys and values) without recursion. A container met again is not walked again
    but counts with its whole size, as a YAML alias expands: the walk is linear in the distinct containers however
    much they are shared. A container inside itself (a recursive YAML alias) is reported too.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()  # the containers on the path from the top to the one being walked
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, done = stack.pop()
        if not isinstance(node, (list, tuple, dict)):
            continue
        key = id(node)
        children: list[Any] = [x for kv in node.items() for x in kv] if isinstance(node, dict) else list(node)
        if done:
            open_.discard(key)
            inner = [c for c in children if isinstance(c, (list, tuple, dict))]
            size[key] = 1 + len(children) - len(inner) + sum(size[id(c)] for c in inner)
            depth[key] = 1 + max((depth[id(c)] for c in inner), default=0)
            if depth[key] > MAX_DEPTH:
                return TOO_DEEP
            if size[key] > MAX_VALUES:
                return TOO_BIG
            continue
        if key in size:
            continue
        if key in open_:
            return RECURSIVE
        if len(open_) >= MAX_DEPTH:
            return TOO_DEEP
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, (list, tuple, dict)) and id(c) not in size)
    return None


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that names one key twice (PyYAML keeps the last silently)."""

    def __init__(self, key: Any, line: int) -> None:
        super().__init__(problem=f"duplicate key {show(key)}")
        self.key, self.line = key, line


class TooDeepOrBigError(yaml.YAMLError):
    """A YAML or TOML value nested deeper than :data:`MAX_DEPTH`, or expanding (through aliases) to more than
    :data:`MAX_VALUES` values; ``problem`` says which, without a position."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tags) that rejects a key given twice in one mapping, at any depth.

    Keys pulled in by a merge (``<<: *base``) may still be overridden: only the mapping's own keys must differ.
    Values nested deeper than :data:`MAX_DEPTH` or expanding to more than :data:`MAX_VALUES` values (an alias
    bomb) raise :class:`TooDeepOrBigError`, and a scalar its constructor refuses (``2001-13-45``, an integer of more
    than 4300 digits) a ``ConstructorError`` with its line, rather than a bare ``ValueError``.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # The composer recurses once per level: stop long before Python's recursion limit does.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise TooDeepOrBigError(TOO_DEEP)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        data = super().construct_document(node)
        # Aliases are constructed by reference (linear), but what reads the result walks every expansion.
        problem = nesting_problem(data)
        if problem is not None:
            raise TooDeepOrBigError(problem)
        return data

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as err:
            problem = f"cannot read {show(node.value)}: {_one_line(str(err)).partition(';')[0]}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: the base constructor reports it
                    continue
                if duplicate:
                    raise DuplicateKeyError(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse YAML text safely (no tags), rejecting duplicate keys with :class:`DuplicateKeyError` and values too
    deep or too big with :class:`TooDeepOrBigError`."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no tags
    except RecursionError:  # the composer's depth guard should come first; never a traceback
        raise TooDeepOrBigError(TOO_DEEP) from None


def load_toml(text: str) -> dict[str, Any]:
    """Parse TOML text; values too deep or too big raise :class:`TooDeepOrBigError` (tomllib recurses per level)."""
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise TooDeepOrBigError(TOO_DEEP) from None
    problem = nesting_problem(data)
    if problem is not None:
        raise TooDeepOrBigError(problem)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a raw config dict, in place.

    The same key given twice is fine: the last one wins.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {show(item)}: expected key=value, e.g. optim.lr=1e-3")
        named = _field_name(key)
        try:
            value = load_yaml(text)
        except (DuplicateKeyError, TooDeepOrBigError) as err:
            raise UserError(f"--set {named}: {err.problem}") from None
        except yaml.YAMLError:
            raise UserError(f"--set {named}: cannot parse value {show(text)}") from None
        set_field(data, key.strip(), value, where="--set ")
    return data


def set_field(data: dict[str, Any], path: str, value: Any, where: str = "") -> None:
    """Set the dotted field ``path`` of a raw config dict to ``value``, creating sections on the way.

    An absent or null section (e.g. ``optim.grokfast: null``) starts empty, so its defaults apply to the rest.
    """
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"{where}{_field_name(path)}: {_field_name(part)} is not a section")
        node = child
    node[leaf] = copy.deepcopy(value)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or TOML file into a dict, with one-line errors for missing or malformed files."""
    _check_config_path(path)
    name = _one_line_text(str(path))  # what the messages call it: a file name may hold a line break
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise UserError(f"{name}: cannot read as a text config ({type(err).__name__})") from None
    try:
        data = load_toml(text) if path.suffix == ".toml" else load_yaml(text)
    except DuplicateKeyError as err:
        raise UserError(f"{name} line {err.line}: {err.problem}") from None
    except TooDeepOrBigError as err:
        raise UserError(f"{name}: {err.problem}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{name} line {mark.line + 1}" if mark is not None else name
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        raise UserError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{name}: not valid YAML: {_one_line(str(err))}") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(_toml_error(name, text, err)) from None
    except ValueError as err:  # tomllib lets int() refuse a number of more than 4300 digits
        raise UserError(f"{name}: not valid TOML: {_one_line(str(err)).partition(';')[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{name}: expected a mapping of config sections at the top level")
    return data


def _check_config_path(path: Path) -> None:
    """A one-line error unless ``path`` is a regular file (or a link to one)."""
    name = _one_line_text(str(path))
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):  # also a link to nowhere
            raise UserError(f"{name}: no such config file") from None
        reason = (err.strerror or type(err).__name__).lower()
        raise UserError(f"{name}: cannot read the config file ({reason})") from None
    except ValueError:  # a NUL character: no file can have that name
        raise UserError(f"{name}: no such config file") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{name}: is a directory, not a config file")
    if not stat.S_ISREG(mode):
        raise UserError(f"{name}: not a regular file (a config must be a YAML or TOML file)")


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else "syntax error"


def _toml_error(path: Path | str, text: str, err: tomllib.TOMLDecodeError) -> str:
    """tomllib's message as ``file line N: ...``; a key given twice is named (tomllib only says where)."""
    message = _one_line(str(err))
    at = re.search(r" \(at line (\d+), column \d+\)$", message)
    if at is None:
        return f"{path}: not valid TOML: {message}"
    line, message = int(at.group(1)), message[: at.start()]
    source = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
    if message == "Cannot overwrite a value" and "=" in source:
        key = source.partition("=")[0].strip().strip("\"'")
        return f"{path} line {line}: duplicate key {key!r}"
    inline = re.fullmatch(r"Duplicate inline table key (.*)", message)
    if inline is not None:
        return f"{path} line {line}: duplicate key {inline.group(1)}"
    table = re.fullmatch(r"Cannot declare \((.*?),?\) twice", message)
    if table is not None:
        name = ".".join(part.strip().strip("'\"") for part in table.group(1).split(","))
        return f"{path} line {line}: duplicate table [{name}]"
    return f"{path} line {line}: not valid TOML: {message}"


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Load a config file, apply ``--set`` overrides and resolve defaults. The name defaults to the file's stem.

    This is the user-facing load, so it also checks that ``model.init_from`` names an existing file (configs
    re-read from run directories go through :func:`parse_config` alone: a finished run's source may be gone).
    """
    path = Path(path)
    data = read_config_file(path)
    data.setdefault("name", path.stem)
    apply_overrides(data, list(overrides))
    config = parse_config(data, source=str(path))
    init_from = config.model.init_from
    if init_from is not None and not Path(init_from).is_file():
        what = "is not a file" if Path(init_from).exists() else "no such file"
        raise UserError(f"{_one_line_text(str(path))}: model.init_from: {what}: {_one_line_text(init_from)}")
    return config


def config_differences(a: RunConfig, b: RunConfig) -> list[str]:
    """Dotted names of the fields whose values differ, as ``field: a != b``."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return [f"{k}: {fa.get(k)!r} != {fb.get(k)!r}" for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)]
