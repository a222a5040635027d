"""Run configuration: pydantic models for every section, YAML/TOML loading, ``--set`` overrides.

A config names everything that decides a run's result. Unknown keys are rejected, presets are resolved
on load (so the ``config.yaml`` written beside a run has every value spelled out), and every mistake
becomes a one-line :class:`~grokscope.errors.UserError` naming the field.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grokscope.errors import UserError
from grokscope.tasks import OPERATIONS, is_prime

MetricName = Literal["train_acc", "test_acc", "val_acc", "train_loss", "test_loss", "val_loss"]


class _Section(BaseModel):
    # allow_inf_nan=False: every float field (bounds or not) rejects inf, -inf and nan, however they are spelled.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TaskConfig(_Section):
    """What the model learns: ``(a op b) mod modulus`` in a sequence format, and how the data is split."""

    operation: str = "add"
    modulus: int = Field(113, ge=2)
    format: Literal["nanda", "power"] = "nanda"
    loss_on: Literal["answer", "all"] = "answer"
    train_fraction: float = Field(0.3, gt=0, lt=1)
    val_fraction: float = Field(0.0, ge=0, lt=1)
    input_range: int | None = Field(None, ge=1, description="restrict a, b to [0, input_range)")
    split_seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="seed of the train/test split; null: the run's seed"
    )

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        op = OPERATIONS.get(self.operation)
        if op is None:
            raise ValueError(f"operation: unknown operation {self.operation!r} (known: {', '.join(OPERATIONS)})")
        if op.needs_prime and not is_prime(self.modulus):
            raise ValueError(f"modulus: {self.operation} needs a prime modulus, got {self.modulus}")
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
    n_layers: int | None = Field(None, ge=1)
    d_model: int | None = Field(None, ge=1)
    n_heads: int | None = Field(None, ge=1)
    d_head: int | None = Field(None, ge=1)
    d_mlp: int | None = Field(None, ge=1)
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
    lamb: float = Field(2.0, ge=0, description="amplification of the slow gradient")
    window: int = Field(100, ge=1, description="moving-average length in steps (filter: ma)")


class OptimConfig(_Section):
    """AdamW with a linear warmup, optional gradient clipping and grokking accelerators (applied in that order)."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(10, ge=0)
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm; none = no clipping")
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
    """Checkpoints at step 0, every ``dense_every`` steps up to ``dense_until``, then every ``every``, and at the end."""

    every: int = Field(1000, ge=1)
    dense_every: int = Field(100, ge=1)
    dense_until: int = Field(0, ge=0)

    def due(self, step: int) -> bool:
        if step == 0 or step % self.every == 0:
            return True
        return step <= self.dense_until and step % self.dense_every == 0


class EarlyStopConfig(_Section):
    """Stop once ``metric`` has been at or past ``threshold`` for ``patience`` steps.

    Accuracies must reach at least the threshold, losses at most it.
    """

    metric: MetricName = "test_acc"
    threshold: float = 0.99
    patience: int = Field(1000, ge=0)

    def met(self, value: float) -> bool:
        return value >= self.threshold if self.metric.endswith("_acc") else value <= self.threshold


class TrainConfig(_Section):
    """The loop: how long, how big a batch, how often to evaluate and save, when to stop early."""

    steps: int = Field(1000, ge=1)
    batch_size: int | None = Field(None, ge=1, description="none = full batch")
    eval_every: int = Field(10, ge=1)
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
            raise ValueError(f"must name a folder, not {name!r}")
        return name

    @property
    def split_seed(self) -> int:
        """The seed of the data split: ``task.split_seed``, or the run seed when that is null."""
        return self.seed if self.task.split_seed is None else self.task.split_seed

    @model_validator(mode="after")
    def _check_early_stop(self) -> RunConfig:
        early = self.train.early_stop
        if early is not None and early.metric.startswith("val") and self.task.val_fraction == 0:
            raise ValueError("train.early_stop.metric: a val_* metric needs task.val_fraction > 0")
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


def first_error(err: ValidationError) -> str:
    """The first validation error as ``field.path: what is wrong``."""
    e = err.errors()[0]
    where = ".".join(str(part) for part in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if e["type"] in ("value_error", "assertion_error"):
        # Cross-field checks name the field themselves, relative to the section.
        return f"{where + '.' if where else ''}{msg}"
    shown = repr(e.get("input"))
    return f"{where}: {msg} (got {shown[:60]})"


def parse_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict into a :class:`RunConfig`; errors name ``source`` and the field."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{source}: {first_error(err)}") from None


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that names one key twice (PyYAML keeps the last silently)."""

    def __init__(self, key: Any, line: int) -> None:
        super().__init__(problem=f"duplicate key {key!r}")
        self.key, self.line = key, line


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tags) that rejects a key given twice in one mapping, at any depth.

    Keys pulled in by a merge (``<<: *base``) may still be overridden: only the mapping's own keys must differ.
    """

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
    """Parse YAML text safely (no tags), rejecting duplicate keys with :class:`DuplicateKeyError`."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no tags


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a raw config dict, in place.

    The same key given twice is fine: the last one wins.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value, e.g. optim.lr=1e-3")
        try:
            value = load_yaml(text)
        except DuplicateKeyError as err:
            raise UserError(f"--set {key}: {err.problem}") from None
        except yaml.YAMLError:
            raise UserError(f"--set {key}: cannot parse value {text!r}") from None
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
            raise UserError(f"{where}{path}: {part} is not a section")
        node = child
    node[leaf] = copy.deepcopy(value)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or TOML file into a dict, with one-line errors for missing or malformed files."""
    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise UserError(f"{path}: cannot read as a text config ({type(err).__name__})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else load_yaml(text)
    except DuplicateKeyError as err:
        raise UserError(f"{path} line {err.line}: {err.problem}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path} line {mark.line + 1}" if mark is not None else str(path)
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        raise UserError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {_one_line(str(err))}") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(_toml_error(path, text, err)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config sections at the top level")
    return data


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else "syntax error"


def _toml_error(path: Path, text: str, err: tomllib.TOMLDecodeError) -> str:
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
        raise UserError(f"{path}: model.init_from: {what}: {init_from}")
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
