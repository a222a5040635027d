"""Shared fixtures: tiny configs that train in about a second on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

from grokscope.config import RunConfig, parse_config

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
