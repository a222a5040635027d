"""Shared fixtures: tiny configs that train in about a second on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

from grokscope.config import RunConfig, parse_config
from grokscope.training import Callback

if TYPE_CHECKING:
    from grokscope.training import TrainResult


def tiny_config(**sections: Any) -> RunConfig:
    """A one-layer model on (a + b) mod 13, small enough to train 60 steps in about a second."""
    data: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "task": {"operation": "add", "modulus": 13, "train_fraction": 0.5},
        "model": {"preset": "nanda", "d_model": 32, "n_heads": 2, "d_head": 16, "d_mlp": 64},
        "optim": {"lr": 1e-2, "weight_decay": 1.0},
        "train": {"steps": 60, "eval_every": 10, "checkpoints": {"every": 20}},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return parse_config(data)


def stablemax_loss_by_hand(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """StableMax cross-entropy from its definition (Prieto et al. 2025), in float64: ``s(x) = x + 1`` for ``x >= 0``,
    ``1 / (1 - x)`` for ``x < 0``, normalised over the classes, then ``-log`` of the answer's probability, averaged
    over rows. (Each branch is clamped to its half-line only so that autograd sees no inf in the unused branch.)"""
    x = logits.double()
    s = torch.where(x >= 0, x.clamp_min(0) + 1, 1 / (1 - x.clamp_max(0)))
    return -(s / s.sum(-1, keepdim=True)).gather(-1, answers[:, None]).log().mean()


@pytest.fixture
def tiny() -> RunConfig:
    return tiny_config()


QUICKSTART = Path(__file__).parents[1] / "configs" / "quickstart.yaml"


@pytest.fixture(scope="session")
def grokked_run(tmp_path_factory) -> TrainResult:
    """The quickstart config trained to grokking once per test session (about 35 s on 2 CPU cores)."""
    from grokscope.config import load_config
    from grokscope.training import train

    return train(
        load_config(QUICKSTART), tmp_path_factory.mktemp("grokked") / "quickstart", device="cpu", progress=False
    )


def assert_same_result(got: Any, want: Any, where: str = "result") -> None:
    """``got`` equals ``want`` in every field, recursively: same types (a tuple is no list), floats equal or both NaN,
    tensors and arrays of the same type, dtype, shape and values (NaN equal to NaN), dicts with the same keys in the
    same order. No tolerance: results rebuilt from the cache are exactly what ``compute`` returned (JSON keeps every
    float64; tensors in the JSON row come back as float64, int64 or bool, the dtypes ``compute`` gives them)."""
    import dataclasses
    import math

    import numpy as np

    if dataclasses.is_dataclass(want) and not isinstance(want, type):
        assert type(got) is type(want), f"{where}: {type(got).__name__} is not {type(want).__name__}"
        for f in dataclasses.fields(want):
            assert_same_result(getattr(got, f.name), getattr(want, f.name), f"{where}.{f.name}")
    elif isinstance(want, torch.Tensor | np.ndarray):
        assert type(got) is type(want), f"{where}: {type(got).__name__} is not {type(want).__name__}"
        got_t, want_t = torch.as_tensor(got), torch.as_tensor(want)
        assert got_t.shape == want_t.shape, f"{where}: shape {tuple(got_t.shape)} is not {tuple(want_t.shape)}"
        assert got_t.dtype == want_t.dtype, f"{where}: {got_t.dtype} is not {want_t.dtype}"
        assert torch.equal(got_t.isnan(), want_t.isnan()) if got_t.is_floating_point() else True, f"{where}: NaNs"
        same = got_t.nan_to_num(0.0) == want_t.nan_to_num(0.0) if got_t.is_floating_point() else got_t == want_t
        assert bool(same.all()), f"{where}: values differ"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)} are not {list(want)}"
        for key in want:
            assert_same_result(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list | tuple):
        assert type(got) is type(want), f"{where}: {type(got).__name__} is not {type(want).__name__}"
        assert len(got) == len(want), f"{where}: {len(got)} items, not {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_result(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), f"{where}: {got!r} is not NaN"
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} is not {want!r}"


class InterruptAt(Callback):
    """Stops training at ``step`` as Ctrl-C would (the run is left resumable)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, step, model):
        if step == self.step:
            raise KeyboardInterrupt


def assert_one_line_error(result, *fragments):
    """A CLI result that is a user error: exit 2, no traceback, one ``error: ...`` line holding every fragment."""
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for fragment in fragments:
        assert fragment in lines[0], output
