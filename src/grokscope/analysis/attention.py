"""Attention from the answer position over every (a, b) input, and the Fourier structure of the attention scores.

Per layer and head: the attention pattern from the answer position to each earlier position as p x p tables indexed
``[a, b]``, summaries of it (mean attention per position, variance of the attention to ``a``), and the share of the
pre-softmax score to ``a`` that each frequency explains. :func:`attention_html` renders chosen inputs with circuitsvis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from grokscope.analysis import basis
from grokscope.analysis.common import answer_run, grid_inputs, jsonable, require_grid
from grokscope.analysis.spec import AnalysisSpec, RowResult, from_row
from grokscope.errors import UserError
from grokscope.tasks import ModularTask, Split

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

NAME = "attention"


def position_names(task: ModularTask) -> tuple[str, ...]:
    """A name for each sequence position; the answer is read at ``=`` in both formats."""
    if task.format == "nanda":
        return ("a", "b", "=")
    return ("BOS", "a", "OP", "b", "=", "c", "EOS", "EOS")


def key_positions(task: ModularTask) -> tuple[str, ...]:
    """Names of the positions the answer position attends to, itself included."""
    return position_names(task)[: task.answer_position + 1]


def operand_positions(task: ModularTask) -> tuple[int, int]:
    """Sequence positions of the operands ``a`` and ``b``."""
    return (0, 1) if task.format == "nanda" else (1, 3)


def score_fve(scores: Float[Tensor, "*heads p p"]) -> Float[Tensor, "*heads n_freq"]:
    """Share of each table's variance over ``[a, b]`` that lies in each frequency's 2-D Fourier cells.

    The denominator is the sum of squares of every cell except the constant one (the table's variance times p^2),
    so cross terms between two frequencies belong to no frequency and the shares sum to at most 1. A constant
    table has no variance to share out and gets zeros (:func:`~grokscope.analysis.basis.frequency_shares`).
    """
    shares, _ = basis.frequency_shares(scores.double().movedim((-2, -1), (0, 1)))
    return shares.movedim(0, -1)


@dataclass
class AttentionResult(RowResult):
    """Attention of every head from the answer position, over the full grid of inputs.

    ``pattern[l, h, a, b, k]`` is the attention of head ``h`` in layer ``l`` from the answer position to key
    position ``k`` (named in ``positions``) on input ``(a, b)``; ``scores[l, h, a, b]`` is the pre-softmax score to
    ``a``'s position and ``score_fve[l, h, f - 1]`` the share of its variance in frequency ``f``.

    ``to_dict`` holds per-head summaries (``score_fve`` among them); the full p x p tables (rounded to 4 decimals) only
    when ``include_heatmaps`` is set, since they are large and the report needs them for one checkpoint only. The exact
    ``pattern`` and ``scores`` live in the sidecar file (``ARRAYS``).
    """

    ARRAYS = ("pattern", "scores")

    positions: tuple[str, ...]
    pattern: Float[Tensor, "layer head p p key"]
    scores: Float[Tensor, "layer head p p"]
    score_fve: Float[Tensor, "layer head n_freq"]
    include_heatmaps: bool = False

    @property
    def mean_attention(self) -> Float[Tensor, "layer head key"]:
        return self.pattern.mean(dim=(2, 3))

    @property
    def attention_a_variance(self) -> Float[Tensor, "layer head"]:
        """Population variance over the (a, b) grid of the attention to ``a``: 0 for a head that ignores the inputs."""
        to_a = self.pattern[..., self.positions.index("a")]
        return to_a.var(dim=(2, 3), correction=0)

    def to_dict(self) -> dict[str, Any]:
        n_layers, n_heads = self.pattern.shape[:2]
        mean, variance = self.mean_attention, self.attention_a_variance
        heads = []
        for layer in range(n_layers):
            for head in range(n_heads):
                fve = self.score_fve[layer, head]
                heads.append(
                    {
                        "layer": layer,
                        "head": head,
                        "label": f"L{layer}H{head}",
                        "mean_attention": dict(zip(self.positions, mean[layer, head].tolist(), strict=True)),
                        "attention_a_variance": variance[layer, head].item(),
                        "score_fve": fve,
                        "score_top_frequency": int(fve.argmax()) + 1,
                        "score_top_fve": fve.max().item(),
                    }
                )
        out: dict[str, Any] = {"positions": list(self.positions), "heads": heads}
        if self.include_heatmaps:
            rounded = self.pattern.round(decimals=4)
            out["heatmaps"] = {
                f"L{layer}H{head}": {name: rounded[layer, head, ..., k] for k, name in enumerate(self.positions)}
                for layer in range(n_layers)
                for head in range(n_heads)
            }
        return jsonable(out)

    @classmethod
    def from_dict(cls, row: dict[str, Any], arrays: Mapping[str, Tensor] | None = None) -> AttentionResult:
        """The result again from ``to_dict``'s row and the sidecar ``arrays``: ``score_fve`` from the heads (listed
        layer by layer), ``include_heatmaps`` from whether the row has heatmaps."""
        heads = row["heads"]
        n_layers = 1 + max(head["layer"] for head in heads)
        score_fve = [[head["score_fve"] for head in heads if head["layer"] == layer] for layer in range(n_layers)]
        return from_row(cls, {**row, "score_fve": score_fve, "include_heatmaps": "heatmaps" in row}, arrays)


@torch.no_grad()
def compute(
    model: GrokTransformer, task: ModularTask, *, split: Split | None = None, include_heatmaps: bool = False
) -> AttentionResult:
    """Attention patterns and score Fourier shares over every (a, b); ``split`` is unused (all inputs count)."""
    p = require_grid(task, NAME)
    data = grid_inputs(task)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    query, keys = task.answer_position, key_positions(task)
    pos_a = operand_positions(task)[0]

    names = [f"blocks.{layer}.attn.hook_{what}" for layer in range(n_layers) for what in ("attn_scores", "pattern")]
    # Attention is all this reads: the forward ends at the last layer's pattern.
    cache = answer_run(model, task, data, capture=names, until=names[-1]).captured
    # [batch, head, query, key] -> [head, a, b, ...] at the answer query.
    patterns = [cache[f"blocks.{layer}.attn.hook_pattern"][:, :, query, : len(keys)] for layer in range(n_layers)]
    scores = [cache[f"blocks.{layer}.attn.hook_attn_scores"][:, :, query, pos_a] for layer in range(n_layers)]
    pattern = torch.stack(patterns).double().reshape(n_layers, p, p, n_heads, len(keys)).permute(0, 3, 1, 2, 4)
    score = torch.stack(scores).double().reshape(n_layers, p, p, n_heads).permute(0, 3, 1, 2)
    return AttentionResult(
        positions=keys,
        pattern=pattern.contiguous().cpu(),
        scores=score.contiguous().cpu(),
        score_fve=score_fve(score).cpu(),
        include_heatmaps=include_heatmaps,
    )


@torch.no_grad()
def attention_html(model: GrokTransformer, task: ModularTask, pairs: list[tuple[int, int]]) -> str:
    """Interactive circuitsvis view of every head's attention on the inputs ``pairs``, as self-contained HTML.

    One circuitsvis element shows a thumbnail per (input, layer, head), named like ``a=3 b=5 L0H1``; the tokens
    row names the positions. The JavaScript is inlined (about 1.3 MB), so the HTML works offline; it is a fragment
    that browsers open as a file and that can be pasted into a larger page.
    """
    try:
        from circuitsvis.attention import attention_heads
    except ImportError:
        raise UserError("attention html: install the circuitsvis extra: pip install 'grokscope[circuitsvis]'") from None
    if not pairs:
        raise UserError("attention html: give at least one (a, b) pair")
    data = task.dataset()
    wanted = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    matches = (data.pairs[None, :, :] == wanted[:, None, :]).all(dim=-1)
    missing = [
        tuple(pair) for pair, found in zip(wanted.tolist(), matches.any(dim=1).tolist(), strict=True) if not found
    ]
    if missing:
        raise UserError(f"attention html: {missing[0]} is not an input of {task.describe()}")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    chosen = data.subset(matches.int().argmax(dim=1))
    cache = answer_run(model, task, chosen, capture=names, until=names[-1]).captured
    # [pair, layer, head, query, key] flattened into one list of "heads" for a single element.
    pattern = torch.stack([cache[name] for name in names], dim=1)
    names = [
        f"a={a} b={b} L{layer}H{head}"
        for a, b in wanted.tolist()
        for layer in range(n_layers)
        for head in range(n_heads)
    ]
    rendered = attention_heads(
        attention=pattern.reshape(-1, task.n_ctx, task.n_ctx).float().cpu(),
        tokens=list(position_names(task)),
        attention_head_names=names,
        mask_upper_tri=True,
    )
    # str() of the rendered object imports the JavaScript from a CDN; local_src inlines it.
    return rendered.local_src


SPEC = AnalysisSpec(
    name=NAME,
    compute=compute,
    result=AttentionResult,
    inputs=frozenset({"split"}),
    needs_grid=True,
    # The heatmaps are large: drawn for the latest analysed checkpoint only.
    latest_only=("include_heatmaps", "heatmaps"),
)
