"""Shared fixtures: tiny configs that train in about a second on the CPU."""

from __future__ import annotations

from typing import Any

import pytest

from grokscope.config import RunConfig, parse_config


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


@pytest.fixture
def tiny() -> RunConfig:
    return tiny_config()
