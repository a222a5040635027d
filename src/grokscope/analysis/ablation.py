"""Ablations: knock out heads, neurons, Fourier frequencies or positions and measure the loss and accuracy that remain.

An :class:`Ablation` is plain data (also written as a string such as ``head:0.1:mean``); it is applied through
TransformerLens hooks to every input of the task in the shared answer-position forward
(:func:`~grokscope.analysis.common.answer_run`), one ablation at a time, and scored as every analysis scores
(:func:`~grokscope.analysis.common.answer_loss`: an input is right only when its answer wins strictly) on the train
and test split against the clean model. Key Fourier frequencies can be ablated together next to an equal-size control
set. Ablating frequencies from the neurons (``neuron_frequencies``) removes the directions ``cos(w_k (a +- b))`` and
``sin(w_k (a +- b))`` from their activation tables: the zero ablation of the key set is exactly the excluded
neuron-level measure of :mod:`grokscope.analysis.progress`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from jaxtyping import Float, Int
from torch import Tensor

from grokscope.analysis import basis
from grokscope.analysis.attention import operand_positions
from grokscope.analysis.common import (
    RowHook,
    answer_index,
    answer_logits,
    answer_loss,
    answer_run,
    jsonable,
    model_device,
    require_grid,
    score_splits,
    split_indices,
)
from grokscope.analysis.spec import AnalysisSpec, RowResult, from_row
from grokscope.errors import UserError
from grokscope.tasks import Dataset, ModularTask, Split

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

NAME = "ablation"

Component = Literal["head", "neurons", "embed_frequencies", "neuron_frequencies", "neuron_frequency_cells", "position"]
Method = Literal["zero", "mean", "resample"]
COMPONENTS: tuple[str, ...] = get_args(Component)
METHODS: tuple[str, ...] = get_args(Method)
_NEURON_FREQUENCIES = ("neuron_frequencies", "neuron_frequency_cells")
_LAYERED = ("head", "neurons", *_NEURON_FREQUENCIES)
_FREQUENCIES = ("embed_frequencies", *_NEURON_FREQUENCIES)
# The operations whose answer is a function of a + b or a - b: the neurons' frequency directions are defined for them.
DIRECTION_OPERATIONS = ("add", "sub")
SYNTAX = "COMPONENT:[LAYER.]IDS:METHOD[:SEED], e.g. head:0.1:mean or embed_frequencies:3,7:zero"


@dataclass(frozen=True)
class Ablation:
    """What to knock out and how.

    ``target`` holds, by ``component``:

    * ``head``: head ids in ``layer``; their ``hook_z`` at every position.
    * ``neurons``: neuron ids in ``layer``; their ``mlp.hook_post`` at every position.
    * ``embed_frequencies``: frequencies (1 .. p // 2) removed from the number-token embeddings at the operand
      positions (``hook_embed``).
    * ``neuron_frequencies``: frequencies removed from every neuron's activation table N over the (a, b) grid at the
      answer position in ``layer``: for each k, the directions ``cos(w_k s)`` and ``sin(w_k s)``, ``s = a + b`` (add)
      or ``a - b`` (sub), each of unit norm over the grid (``basis.trig_directions``): ``N - sum_u u u^T N``. What
      "excluded loss" removes (Nanda et al. 2023): zero-ablating a model's key frequencies here gives the
      neuron-level excluded logits of :mod:`grokscope.analysis.progress`. Tasks whose answer is a + b or a - b only.
    * ``neuron_frequency_cells``: frequencies removed from the same tables as whole 2-D Fourier cell blocks: the
      frequency's cells of the table's transform (linear in a, linear in b, and a-b products of frequency k, the
      (const, cos k, sin k)^2 block less its constant; ``basis.frequency_cells``). More than the two directions
      above (one-operand terms, ``cos(w_k (a - b))`` for add), and defined for any task on the full grid.
    * ``position``: positions whose layer-0 residual input (token + positional embedding) is ablated.

    ``method``: ``zero`` sets the ablated part to 0; ``mean`` to its mean over every input of the task; ``resample``
    to its value on another input, drawn per input with a generator seeded by ``seed``. A Fourier component averages
    to zero over the full grid, so ``mean`` then equals ``zero`` for the frequency components.

    As a string (see :meth:`parse`): ``COMPONENT:[LAYER.]IDS:METHOD[:SEED]``. ``IDS`` is a comma-separated list of
    ids and inclusive ranges (``0-63,100``), possibly empty; ``LAYER.`` (default 0) is allowed for the layered
    components only. Examples: ``head:0.1:mean``, ``neurons:0.0-63:zero``, ``embed_frequencies:3,7:zero``,
    ``neuron_frequencies:14:resample:2``, ``position:2:mean``.
    """

    component: Component
    target: tuple[int, ...]
    method: Method
    layer: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", tuple(int(i) for i in self.target))
        problem = None
        if self.component not in COMPONENTS:
            problem = f"component must be one of {', '.join(COMPONENTS)}"
        elif self.method not in METHODS:
            problem = f"method must be one of {', '.join(METHODS)}"
        elif min((*self.target, self.layer, self.seed)) < 0:
            problem = "ids, layer and seed must be non-negative"
        elif self.layer and self.component not in _LAYERED:
            problem = f"only {', '.join(_LAYERED)} take a layer"
        if problem:
            raise UserError(f"ablation {self.component}:{_format_ids(self.target)}:{self.method}: {problem}")

    @property
    def label(self) -> str:
        """The spec as its canonical string: ``Ablation.parse(spec.label) == spec``."""
        layer = f"{self.layer}." if self.component in _LAYERED else ""
        seed = f":{self.seed}" if self.seed else ""
        return f"{self.component}:{layer}{_format_ids(self.target)}:{self.method}{seed}"

    @classmethod
    def parse(cls, text: str) -> Ablation:
        """An ablation from ``COMPONENT:[LAYER.]IDS:METHOD[:SEED]`` (grammar in the class docstring)."""
        parts = text.strip().split(":")
        if len(parts) not in (3, 4):
            raise UserError(f"ablation {text!r}: expected {SYNTAX}")
        component, target, method, *seed = parts
        if component not in COMPONENTS:
            raise UserError(f"ablation {text!r}: component must be one of {', '.join(COMPONENTS)}")
        layer = "0"
        if component in _LAYERED and "." in target:
            layer, target = target.split(".", 1)
        try:
            ids = _parse_ids(target)
            layer_id, seed_id = int(layer), int(seed[0]) if seed else 0
        except ValueError:
            raise UserError(f"ablation {text!r}: ids, layer and seed must be integers; expected {SYNTAX}") from None
        return cls(component, ids, method, layer=layer_id, seed=seed_id)  # type: ignore[arg-type]


def _parse_ids(text: str) -> tuple[int, ...]:
    ids: list[int] = []
    for piece in filter(None, text.split(",")):
        first, _, last = piece.partition("-")
        start, stop = int(first), int(last or first)
        if stop < start:
            raise ValueError(piece)
        ids.extend(range(start, stop + 1))
    return tuple(ids)


def _format_ids(ids: tuple[int, ...]) -> str:
    """Comma-separated ids with runs of three or more consecutive ids written as ranges, order kept."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) >= 3 else ",".join(str(i) for i in run) for run in runs)


# Checking specs against a model ------------------------------------------------------------------------------------
def _check(spec: Ablation, model: GrokTransformer, task: ModularTask) -> None:
    cfg = model.cfg
    bounds = {
        "head": (0, cfg.n_heads, "heads"),
        "neurons": (0, cfg.d_mlp or 0, "neurons"),
        "embed_frequencies": (1, task.modulus // 2 + 1, "frequencies"),
        "neuron_frequencies": (1, task.modulus // 2 + 1, "frequencies"),
        "neuron_frequency_cells": (1, task.modulus // 2 + 1, "frequencies"),
        "position": (0, task.n_ctx, "positions"),
    }
    low, high, what = bounds[spec.component]
    bad = [i for i in spec.target if not low <= i < high]
    problem = None
    if spec.layer >= cfg.n_layers:
        problem = f"layer {spec.layer} out of range (model has {cfg.n_layers} layers)"
    elif spec.component in ("neurons", *_NEURON_FREQUENCIES) and cfg.attn_only:
        problem = "the model has no MLP"
    elif bad:
        problem = f"{bad[0]} out of range (valid {what}: {low}..{high - 1})"
    if problem:
        raise UserError(f"ablation {spec.label}: {problem}")
    if spec.component in _NEURON_FREQUENCIES:
        require_grid(task, f"ablation {spec.label}")
    if spec.component == "neuron_frequencies" and task.operation.name not in DIRECTION_OPERATIONS:
        raise UserError(
            f"ablation {spec.label}: the directions cos/sin(w_k (a +- b)) need add or sub, not "
            f"{task.operation.name}; neuron_frequency_cells removes whole Fourier cells instead"
        )


def _hook_name(spec: Ablation) -> str:
    return {
        "head": f"blocks.{spec.layer}.attn.hook_z",
        "neurons": f"blocks.{spec.layer}.mlp.hook_post",
        "neuron_frequencies": f"blocks.{spec.layer}.mlp.hook_post",
        "neuron_frequency_cells": f"blocks.{spec.layer}.mlp.hook_post",
        "embed_frequencies": "hook_embed",
        "position": "blocks.0.hook_resid_pre",
    }[spec.component]


def _needs_clean(spec: Ablation) -> bool:
    """Whether the hook needs the clean activations at its hook point (a neuron table, a mean, a resample)."""
    return spec.component in _NEURON_FREQUENCIES or (spec.component != "embed_frequencies" and spec.method != "zero")


# Fourier parts --------------------------------------------------------------------------------------------------------
def embedding_frequency_part(
    embeddings: Float[Tensor, "p d_model"], frequencies: Sequence[int]
) -> Float[Tensor, "p d_model"]:
    """The part of number-token embeddings ``W_E[:p]`` made of ``frequencies``: ``B_F.T @ B_F @ W_E[:p]``."""
    p = embeddings.shape[0]
    fourier = basis.fourier_basis(p).to(embeddings.device)
    rows = torch.isin(basis.basis_frequencies(p), torch.tensor(list(frequencies), dtype=torch.long))
    selected = fourier[rows.to(embeddings.device)]
    return selected.T @ (selected @ embeddings.double())


def frequency_cell_part(tables: Float[Tensor, "p p n"], frequencies: Sequence[int]) -> Float[Tensor, "p p n"]:
    """The part of tables over ``[a, b]`` (one per last index, float64) in the 2-D Fourier cells of ``frequencies``."""
    p = tables.shape[0]
    cells = basis.frequency_cells(p)[torch.tensor(list(frequencies), dtype=torch.long) - 1].any(dim=0)
    coefficients = basis.fourier_2d(tables.double())
    return basis.inverse_fourier_2d(coefficients * cells.to(tables.device)[:, :, None])


def neuron_frequency_part(
    tables: Float[Tensor, "p_sq n"], spec: Ablation, task: ModularTask
) -> Float[Tensor, "p_sq n"]:
    """What ``spec`` (a ``neuron_frequencies`` or ``neuron_frequency_cells`` ablation) removes from activation tables
    over the grid (rows ``a * p + b``, float64): their projection onto the frequencies' directions, or their part in
    the frequencies' 2-D cells."""
    p = task.modulus
    if spec.component == "neuron_frequencies":
        return basis.trig_part(tables.double(), basis.trig_directions(p, task.operation.name, spec.target))
    return frequency_cell_part(tables.reshape(p, p, -1), spec.target).reshape(p * p, -1)


def frequency_embedding_norms(model: GrokTransformer, task: ModularTask) -> Float[Tensor, " n_freq"]:
    """How much of the number-token embeddings each frequency carries: the norm of its Fourier coefficients."""
    return basis.matrix_spectrum(model.W_E[: task.modulus].double()).cpu()


def control_frequencies(model: GrokTransformer, task: ModularTask, key: Sequence[int]) -> tuple[int, ...]:
    """As many non-key frequencies as ``key`` has: those with the largest embedding norms (ties: lower first).

    Taking strong frequencies makes the control a fair one: ablating frequencies the embedding does not use would
    change nothing whatever the key frequencies are.
    """
    norms = frequency_embedding_norms(model, task)
    frequencies = torch.arange(1, len(norms) + 1)
    others = ~torch.isin(frequencies, torch.tensor(list(key), dtype=torch.long))
    order = torch.sort(norms[others], descending=True, stable=True).indices
    return tuple(sorted(frequencies[others][order[: len(set(key))]].tolist()))


# Running ablations ---------------------------------------------------------------------------------------------
def _other_rows(n: int, seed: int, device: torch.device) -> Int[Tensor, " n"]:
    """For each row a different row, drawn with a private generator so the global RNG is untouched."""
    offsets = torch.randint(1, n, (n,), generator=torch.Generator().manual_seed(seed))
    return ((torch.arange(n) + offsets) % n).to(device)


def _ablation_hook(
    spec: Ablation, task: ModularTask, model: GrokTransformer, data: Dataset, clean: dict[str, Tensor]
) -> tuple[str, RowHook]:
    """A hook for :func:`~grokscope.analysis.common.answer_run` that ablates ``spec`` on the rows of ``data``."""
    name = _hook_name(spec)
    other = _other_rows(len(data), spec.seed, data.tokens.device) if spec.method == "resample" else None

    def replace(values: Tensor) -> Tensor:
        if spec.method == "zero":
            return torch.zeros_like(values)
        if spec.method == "mean":
            return values.mean(dim=0, keepdim=True).expand_as(values)
        return values[other]

    ids = list(spec.target)
    if spec.component in ("head", "neurons", "position"):
        index = (slice(None), ids) if spec.component == "position" else (slice(None), slice(None), ids)
        replacement = None if spec.method == "zero" else replace(clean[name][index])

        def set_values(activation: Tensor, rows: slice) -> Tensor:
            out = activation.clone()
            out[index] = 0.0 if replacement is None else replacement[rows]
            return out

        return name, set_values

    # Frequency components: swap the removed part for its replacement, leaving the rest of the activation as it is.
    if spec.component == "embed_frequencies":
        positions = list(operand_positions(task))
        part = embedding_frequency_part(model.W_E[: task.modulus], spec.target)[data.tokens[:, positions]]
    else:
        positions = [answer_index(model, task, name)]
        part = neuron_frequency_part(clean[name][:, positions[0]], spec, task)[:, None]
    delta = replace(part) - part

    def shift(activation: Tensor, rows: slice) -> Tensor:
        out = activation.clone()
        out[:, positions] += delta[rows].to(activation.dtype)
        return out

    return name, shift


def _clean_run(
    model: GrokTransformer, task: ModularTask, data: Dataset, specs: Sequence[Ablation]
) -> tuple[Float[Tensor, "n d_vocab_out"], dict[str, Tensor]]:
    names = sorted({_hook_name(spec) for spec in specs if _needs_clean(spec)})
    run = answer_run(model, task, data, capture=names)
    assert run.logits is not None
    return run.logits, run.captured


def _ablated(
    model: GrokTransformer, task: ModularTask, data: Dataset, spec: Ablation, clean: dict[str, Tensor]
) -> Float[Tensor, "n d_vocab_out"]:
    return answer_logits(model, task, data, hooks=[_ablation_hook(spec, task, model, data, clean)])


@torch.no_grad()
def ablated_logits(model: GrokTransformer, task: ModularTask, spec: Ablation) -> Float[Tensor, "n d_vocab_out"]:
    """Answer-position logits under ``spec`` for every row of ``task.dataset()`` (means and resamples over them)."""
    _check(spec, model, task)
    data = task.dataset().to(model_device(model))
    _, clean = _clean_run(model, task, data, [spec])
    return _ablated(model, task, data, spec, clean)


# Results -------------------------------------------------------------------------------------------------------
@dataclass
class Scores:
    """Cross-entropy and accuracy at the answer position; train values are NaN when no split was given."""

    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float


@dataclass
class AblationOutcome:
    """One ablation's scores; ``role`` is ``key`` or ``control`` for the frequency sets compared, else empty."""

    spec: Ablation
    scores: Scores
    role: str = ""

    def to_dict(self, clean: Scores) -> dict[str, Any]:
        spec, scores = self.spec, jsonable(self.scores)
        deltas = {f"delta_{k}": getattr(self.scores, k) - getattr(clean, k) for k in scores}
        return {
            "label": spec.label,
            "component": spec.component,
            "method": spec.method,
            "layer": spec.layer,
            "target": list(spec.target),
            "seed": spec.seed,
            "role": self.role,
            **scores,
            **jsonable(deltas),
        }


@dataclass
class AblationResult(RowResult):
    """The clean model's scores and each ablation's outcome.

    The row (``to_dict``) lists the ablations under ``ablations``, each as its spec's fields, its scores and their
    differences from the clean scores; ``from_dict`` rebuilds the specs and scores from it (the differences follow).
    """

    clean: Scores
    outcomes: list[AblationOutcome]
    key_frequencies: tuple[int, ...] = ()
    control_frequencies: tuple[int, ...] = ()
    single_frequency_sweep: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": jsonable(self.clean),
            "single_frequency_sweep": self.single_frequency_sweep,
            "key_frequencies": list(self.key_frequencies),
            "control_frequencies": list(self.control_frequencies),
            "ablations": [outcome.to_dict(self.clean) for outcome in self.outcomes],
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any], arrays: Mapping[str, Tensor] | None = None) -> AblationResult:
        outcomes = [
            AblationOutcome(
                Ablation(item["component"], item["target"], item["method"], layer=item["layer"], seed=item["seed"]),
                from_row(Scores, item),  # null scores (no split: no train scores) come back as NaN
                item["role"],
            )
            for item in row["ablations"]
        ]
        return cls(
            from_row(Scores, row["clean"]),
            outcomes,
            tuple(row["key_frequencies"]),
            tuple(row["control_frequencies"]),
            row["single_frequency_sweep"],
        )


def _has_grid(task: ModularTask) -> bool:
    try:
        require_grid(task, NAME)
    except UserError:
        return False
    return True


def neuron_frequency_component(task: ModularTask) -> Component:
    """The neuron-frequency ablation of the default specs: the frequencies' directions (``neuron_frequencies``, what
    excluded loss removes) where the answer is a + b or a - b, whole cell blocks (``neuron_frequency_cells``)
    otherwise."""
    return "neuron_frequencies" if task.operation.name in DIRECTION_OPERATIONS else "neuron_frequency_cells"


def default_specs(
    model: GrokTransformer,
    task: ModularTask,
    key_frequencies: Sequence[int] | None = None,
    single_frequencies: bool = True,
) -> list[Ablation]:
    """Every head (mean), every single frequency in embedding space (zero; when ``single_frequencies``), and with
    ``key_frequencies`` the key set and its control set (:func:`control_frequencies`) together, zero-ablated in
    embedding space and in the neurons of the last layer (when the model has an MLP and the task covers the grid;
    :func:`neuron_frequency_component` says how)."""
    cfg = model.cfg
    specs = [Ablation("head", (h,), "mean", layer=layer) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    if single_frequencies:
        specs += [Ablation("embed_frequencies", (k,), "zero") for k in range(1, task.modulus // 2 + 1)]
    if key_frequencies:
        key = tuple(sorted(set(key_frequencies)))
        for frequencies in (key, control_frequencies(model, task, key)):
            specs.append(Ablation("embed_frequencies", frequencies, "zero"))
            if not cfg.attn_only and _has_grid(task):
                component = neuron_frequency_component(task)
                specs.append(Ablation(component, frequencies, "zero", layer=cfg.n_layers - 1))
    return list(dict.fromkeys(specs))


def _scores(logits: Float[Tensor, "n d_vocab_out"], answers: Int[Tensor, " n"], split: Split | None) -> Scores:
    """Mean cross-entropy and strict accuracy (:func:`~grokscope.analysis.common.answer_loss`) on the split; without
    one every input is a test input and the train scores are NaN."""
    score = score_splits(*answer_loss(logits.double(), answers), split_indices(len(answers), split, logits.device))
    test = "all" if split is None else "test"
    train = (score.loss["train"], score.acc["train"]) if split is not None else (float("nan"), float("nan"))
    return Scores(*train, score.loss[test], score.acc[test])


@torch.no_grad()
def compute(
    model: GrokTransformer,
    task: ModularTask,
    *,
    split: Split | None = None,
    specs: Sequence[Ablation] | None = None,
    key_frequencies: Sequence[int] | None = None,
    single_frequencies: bool = True,
) -> AblationResult:
    """Scores of the clean model and of each ablation (default: :func:`default_specs`) on the split.

    ``key_frequencies`` also tags the frequency ablations of the key set and of its control set with their role.
    ``single_frequencies=False`` leaves the one-forward-per-frequency sweep out of the default specs (the costly
    part; the runner sweeps the latest checkpoint only). Without a split every input counts as a test input.
    """
    p = task.modulus
    key = tuple(sorted(set(key_frequencies or ())))
    if any(not 1 <= k <= p // 2 for k in key):
        raise UserError(f"{NAME}: key frequencies must be in 1..{p // 2}, got {list(key)}")
    swept = specs is None and single_frequencies
    specs = default_specs(model, task, key, single_frequencies) if specs is None else list(specs)
    for spec in specs:
        _check(spec, model, task)
    control = control_frequencies(model, task, key) if key else ()

    data = task.dataset().to(model_device(model))
    clean_logits, clean = _clean_run(model, task, data, specs)

    def role(spec: Ablation) -> str:
        if spec.component not in _FREQUENCIES or not key:
            return ""
        target = tuple(sorted(set(spec.target)))
        return "key" if target == key else "control" if target == control else ""

    outcomes = [
        AblationOutcome(spec, _scores(_ablated(model, task, data, spec, clean), data.answers, split), role(spec))
        for spec in specs
    ]
    return AblationResult(_scores(clean_logits, data.answers, split), outcomes, key, control, swept)


SPEC = AnalysisSpec(
    name=NAME,
    compute=compute,
    result=AblationResult,
    inputs=frozenset({"split", "key_frequencies"}),
    # Ablating every frequency in turn is costly: for the latest analysed checkpoint only.
    latest_only=("single_frequencies", "single_frequency_sweep"),
)
