"""Many seeds of one config at once: parameters stacked along a model axis, one optimizer step for all of them.

:func:`train_many` writes the same run directories as :func:`~grokscope.training.loop.train` does for each seed
(metrics, checkpoints under TransformerLens names, per-seed resume state, summary), so nothing downstream knows how
a run was trained. Seeds are packed into stacks of ``pack`` models; AdamW and the Grokfast filters are elementwise,
so a stacked update equals N separate ones, and gradient clipping is done per model. Each seed keeps its own
split and batch order. A seed that stops early keeps being computed (its writes stop) until its stack finishes.

On the CPU the default pack is 1 (seeds one after another): the step is compute-bound there and stacking measured
no faster (``benchmarks/train_throughput.py``). On a GPU a stack fills the device that one small model leaves idle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from grokscope import forward
from grokscope.config import RunConfig, config_differences
from grokscope.errors import UserError
from grokscope.memory import bytes_per_model, check_training_fits
from grokscope.models import load_model
from grokscope.rundir import Claim, check_claimable, claim, will_resume
from grokscope.tasks import ModularTask
from grokscope.training.loop import (
    Objective,
    RunLog,
    TrainResult,
    adamw,
    all_finite,
    apply_update,
    batch_indices,
    evaluate,
    gradient_filter,
    initial_model,
    load_resume_state,
    reproducible,
    resolve_device,
    set_learning_rate,
    tf32_matmuls,
    train,
    trainable,
    weight_norms,
)
from grokscope.training.progress import TrainingProgress
from grokscope.training.stopping import StopSignals

GPU_MEMORY_FRACTION = 0.6  # of the free device memory a stack may plan to use


def train_many(
    configs: Sequence[RunConfig],
    run_dirs: Sequence[Path | str],
    *,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    pack: int | None = None,
) -> list[TrainResult]:
    """Train configs that differ only in their seed, ``pack`` at a time (default: 1 on the CPU, what fits on a GPU).

    Returns one :class:`TrainResult` per config, in order.
    """
    if len(configs) != len(run_dirs):
        raise ValueError(f"{len(configs)} configs but {len(run_dirs)} run directories")
    if not configs:
        return []
    _check_same_but_seed(configs)
    check_claimable([Path(d) for d in run_dirs], resume=resume, overwrite=overwrite)  # whole list, before any trains
    dev = resolve_device(device)
    size = pack or default_pack(configs[0], dev, len(configs))
    if size < 1:
        raise UserError(f"--pack {size}: must be at least 1")
    check_training_fits(configs[0], dev, n_models=min(size, len(configs)))
    results: list[TrainResult] = []
    for start in range(0, len(configs), size):
        group, dirs = configs[start : start + size], [Path(d) for d in run_dirs[start : start + size]]
        if len(group) == 1:
            options = dict(device=device, resume=resume, overwrite=overwrite, progress=progress)
            results += [train(c, d, **options) for c, d in zip(group, dirs, strict=True)]
        else:
            results += _train_stack(group, dirs, dev, resume, overwrite, progress)
    return results


def _claim_all(
    configs: Sequence[RunConfig], run_dirs: Sequence[Path], dev: torch.device, resume: bool, overwrite: bool
) -> tuple[list[Claim], list[Any]]:
    """Claim every run directory of a stack (all or none), after building the fresh seeds' initial models so that
    a bad ``init_from`` or ``freeze`` is refused before any folder is touched."""
    task = ModularTask.from_config(configs[0].task)
    fresh = [None if will_resume(d, resume) else initial_model(c, task) for c, d in zip(configs, run_dirs, strict=True)]
    for model in fresh:
        if model is not None:
            trainable(dict(model.named_parameters()), configs[0].optim)
    claims: list[Claim] = []
    try:
        for c, d in zip(configs, run_dirs, strict=True):
            claims.append(claim(c, d, resume=resume, overwrite=overwrite))
    except BaseException:
        for held in claims:
            held.release()
        raise
    return claims, fresh


def default_pack(config: RunConfig, device: torch.device, n_seeds: int) -> int:
    """How many seeds to stack: 1 on the CPU; on a GPU as many as an estimate of the memory per model allows."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(n_seeds, int(GPU_MEMORY_FRACTION * free // bytes_per_model(config))))


def _clone(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _check_same_but_seed(configs: Sequence[RunConfig]) -> None:
    def common(config: RunConfig) -> RunConfig:  # each seed may start from its own checkpoint
        data = config.to_dict()
        data["seed"], data["model"]["init_from"] = 0, None
        return RunConfig.model_validate(data)

    reference = common(configs[0])
    for config in configs[1:]:
        diffs = config_differences(reference, common(config))
        if diffs:
            raise UserError(f"seeds trained together must share their config; {config.name} differs: {diffs[0]}")


def model_slice(state: Any, i: int) -> Any:
    """Model ``i``'s part of a stacked optimizer or filter state: every tensor with dimensions has the model axis
    first; scalars (Adam's step count) and plain values are shared."""
    if isinstance(state, Tensor):
        return state[i].clone() if state.dim() else state.clone()
    if isinstance(state, dict):
        return {k: model_slice(v, i) for k, v in state.items()}
    if isinstance(state, list):
        return [model_slice(v, i) for v in state]
    return state


def stack_states(states: Sequence[Any]) -> Any:
    """The inverse of :func:`model_slice`: per-seed states (same structure) into one stacked state."""
    first = states[0]
    if isinstance(first, Tensor):
        return torch.stack(list(states)) if first.dim() else first.clone()
    if isinstance(first, dict):
        return {k: stack_states([s[k] for s in states]) for k in first}
    if isinstance(first, list):
        return [stack_states([s[j] for s in states]) for j in range(len(first))]
    return first


@torch.no_grad()
def clip_per_model(params: Sequence[Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` applied to each model of a stack on its own (norms over all but the model axis)."""
    grads = [p.grad for p in params if p.grad is not None]
    squares = torch.stack([g.double().pow(2).flatten(1).sum(1) for g in grads]).sum(0)
    scale = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype).view(-1, *([1] * (g.dim() - 1))))


def _train_stack(
    configs: Sequence[RunConfig], run_dirs: Sequence[Path], dev: torch.device, resume: bool, overwrite: bool, bar: bool
) -> list[TrainResult]:
    """Claim the stack's run directories and train them (in groups of equal resume steps)."""
    claims, fresh = _claim_all(configs, run_dirs, dev, resume, overwrite)
    try:
        logs = [RunLog(held.run, held.state, dev) for held in claims]
        # Interrupted between two seeds' writes: fresh seeds, and each group of equal resume steps, go on their own.
        starts = [None if held.state is None else log.start for held, log in zip(claims, logs, strict=True)]
        results: dict[int, TrainResult] = {}
        for s in dict.fromkeys(starts):
            idx = [i for i, start in enumerate(starts) if start == s]
            group = _train_claimed([claims[i] for i in idx], [logs[i] for i in idx], [fresh[i] for i in idx], dev, bar)
            results.update(zip(idx, group, strict=True))
        return [results[i] for i in range(len(configs))]
    finally:
        for held in claims:
            held.release()


def _train_claimed(
    claims: Sequence[Claim], logs: Sequence[RunLog], fresh: Sequence[Any], dev: torch.device, bar: bool
) -> list[TrainResult]:
    """Train a stack of claimed runs that all start at the same step."""
    configs = [held.run.config for held in claims]
    config, start, n = configs[0], logs[0].start, len(configs)
    task, tc, oc = logs[0].run.task, config.train, config.optim
    states = [held.state for held in claims]
    resumed = states[0] is not None  # a group shares its start; a resume state may be that of step 0
    if not resumed:
        models = [m if m is not None else initial_model(c, task) for c, m in zip(configs, fresh, strict=True)]
    else:
        models = [log.run.load_model(start) for log in logs]
    buffers = {k: v for k, v in models[0].state_dict().items() if k not in dict(models[0].named_parameters())}
    arch = models[0].cfg.architecture()
    stacked = {k: v.to(dev).detach() for k, v in forward.stack_parameters(models).items()}
    params = trainable(stacked, oc)
    optimizer, grad_filter = adamw(params, oc, dev), gradient_filter(oc, model_axis=True)
    if resumed:
        try:
            stacked_state = {
                k: stack_states([s[k] for s in states]) for k in ("optimizer", "grad_filter") if k in states[0]
            }
        except (KeyError, IndexError, RuntimeError, TypeError) as err:
            dirs = ", ".join(str(log.run.root) for log in logs)
            raise UserError(f"{dirs}: the seeds' resume states do not stack ({type(err).__name__}: {err})") from None
        load_resume_state(logs[0].run, stacked_state, params, optimizer, grad_filter)

    objective = Objective.of(config, task)
    window = objective.window
    clip = None if oc.grad_clip is None else lambda: clip_per_model(params, oc.grad_clip)

    def model_logits(tokens: Tensor) -> Tensor:
        return forward.logits(stacked, tokens, arch, window)

    data = task.dataset().to(dev)
    splits = [log.run.split() for log in logs]
    train_tokens = torch.stack([data.tokens[s.train.to(dev)] for s in splits])
    train_labels = torch.stack([data.labels[s.train.to(dev)] for s in splits])
    n_train = train_tokens.shape[1]

    def weights(i: int) -> dict[str, Tensor]:
        return {**buffers, **{k: v[i].detach() for k, v in stacked.items()}}

    def resume_state() -> dict[str, Any]:
        state = {"optimizer": optimizer.state_dict()}
        if grad_filter is not None:
            state["grad_filter"] = grad_filter.state_dict()
        return state

    def save(i: int, step: int) -> None:
        if all_finite(v[i] for v in stacked.values()):  # parameters only: buffers hold TL's -inf attention mask
            logs[i].save(step, weights(i), model_slice(resume_state(), i))
        else:
            logs[i].diverge(step, "weights")

    def record(step: int, final: bool) -> bool:
        active = [i for i, log in enumerate(logs) if not log.stopped]
        if any(logs[i].eval_due(step, final) for i in active):
            metrics = evaluate(model_logits, n, data, splits, objective)
            for row, norm in zip(metrics, weight_norms(params, n), strict=True):
                row["weight_norm"] = norm
            lr = optimizer.param_groups[0]["lr"]
            rows = [logs[i].log(step, metrics[i], lr) for i in active]
            progress.update(step, {k: sum(r[k] for r in rows) / len(rows) for k in metrics[0]})
        for i in active:
            log = logs[i]
            if log.diverged is not None:
                continue
            log.stopped = log.stopped or final
            if log.checkpoint_due(step):
                save(i, step)
            else:
                log.flush_if_stale()
        return all(log.stopped for log in logs)

    final_weights: dict[int, dict[str, Tensor]] = {}
    with (
        TrainingProgress(f"{config.name} x{n} seeds", start, tc.steps, enabled=bar) as progress,
        reproducible(dev),
        tf32_matmuls(tc.tf32),
        StopSignals() as stop,
    ):
        step = start
        stopped = all(log.stopped for log in logs) if resumed else record(0, final=False)
        while not stopped:
            index = [batch_indices(step, n_train, tc.batch_size, c.seed) for c in configs]
            if index[0] is None:
                tokens, labels = train_tokens, train_labels
            else:
                rows = torch.stack(index).to(dev)
                tokens, labels = (t[torch.arange(n, device=dev)[:, None], rows] for t in (train_tokens, train_labels))
            set_learning_rate(optimizer, oc, step)
            objective.loss(model_logits(tokens), labels).sum().backward()
            apply_update(optimizer, params, grad_filter, clip)
            step += 1
            was_active = [i for i, log in enumerate(logs) if not log.stopped]
            stopped = record(step, final=step >= tc.steps)
            # Copies: the stack's tensors go on changing while other seeds train.
            final_weights.update(
                {i: _clone(weights(i)) for i in was_active if logs[i].stopped and not logs[i].diverged}
            )
            if stop.requested and not stopped:
                for i in [i for i, log in enumerate(logs) if not log.stopped and log.saved_step != step]:
                    save(i, step)  # may find non-finite weights: that seed diverged rather than being interrupted
                interrupted = [log for log in logs if not log.stopped]
                if interrupted:
                    for log in logs:  # seeds that already stopped (finished early or diverged) keep their summary
                        if log.stopped:
                            log.finish(dev, seeds_trained_together=n)
                    raise stop.interrupted(step, [log.run.root for log in interrupted])
                stopped = True

    results = []
    for i, (c, log) in enumerate(zip(configs, logs, strict=True)):
        if i in final_weights:
            state = final_weights[i]
        elif log.run.steps():
            state = log.run.load_state_dict(log.saved_step if log.saved_step is not None else log.run.steps()[-1])
        else:  # diverged at step 0: nothing finite was ever saved
            state = weights(i)
        model = load_model(c.model, task, state, device=dev)
        resumed_from = log.start if resumed else None
        summary = log.finish(dev, seeds_trained_together=n)
        results.append(TrainResult(run=log.run, model=model, summary=summary, resumed_from=resumed_from))
    return results
