"""The local learning coefficient (LLC) of a checkpoint, estimated with SGLD through devinterp 2.x.

The LLC measures how degenerate the loss landscape is around the weights ``w*``: a regular model with ``d``
parameters at a non-degenerate minimum has LLC ``d / 2``; flatter, more degenerate solutions have less. SGLD samples
``w`` from the tempered, localised posterior ``exp(-n_beta * L(w) - localization / 2 * |w - w*|^2)`` and

    LLC = n_beta * (E_w[L(w)] - L(w*))

with ``L`` the training objective (``task.loss``, the mean cross-entropy over the loss positions, over softmax or
StableMax as the run's ``train.loss_fn`` says: pass it as :func:`compute`'s ``loss_fn``).

devinterp 2.0.1 (``devinterp.slt.sampling.sample``, which ``devinterp.slt.llc.llc`` wraps) is a language-model
sampler, and several of its conventions would bias the estimate here; :func:`estimate_llc` handles each:

* Its loss function receives only ``input_ids`` and must return a per-token loss of shape ``(batch, seq - 1)`` that
  it averages over every token. An answer-only loss returned per token would be divided by ``seq - 1``. We hand it
  row indices ``[i, i]`` as ``input_ids`` (so ``seq - 1 == 1``) and a loss function that looks the rows up and returns
  exactly the training objective of the batch, so its mean (and gradient) is ``task.loss`` with no rescaling.
* ``llc()`` averages the loss over every step *including burn-in*, and takes ``L(w*)`` from a few random mini-batches.
  We read the per-draw losses (``sampling_loss``, recorded after burn-in only) and compute ``L(w*)`` ourselves over
  the whole training set, then form the LLC per chain.
* It seeds the global torch, NumPy and ``random`` RNGs (``init_seed + chain``). We run it inside a private RNG scope,
  so the caller's RNG state is unchanged and the same ``seed`` gives the same result.
* It deep-copies the model once per chain. We first deep-copy the caller's model ourselves (the caller's weights,
  device and train/eval mode are never touched) and drop that copy's temporary TransformerLens hooks, so a caller's
  capture hooks neither fire thousands of times nor leak into the chains; permanent hooks are kept.
* By default it feeds every chain the same mini-batches in the same order. We give each chain its own shuffle, so
  that the chains' agreement measures the whole Monte Carlo error, not only the part the injected noise causes.
* A chain whose loss turns NaN or infinite is stopped with a warning and its remaining draws are left NaN: we report
  it as divergent instead of warning. Its per-chain progress bars (stderr) are silenced unless ``progress=True``.
* Mini-batches come from a ``DataLoader`` with ``drop_last=True`` replayed with ``itertools.cycle``: the first
  epoch's shuffled order repeats, and ``n % batch_size`` rows are never sampled. We shrink ``batch_size`` a little
  (to ``n // ceil(n / batch_size)``, recorded in ``settings``) so that fewer than ``n / batch_size`` rows are left
  out. ``batch_size=None`` samples with the full batch.

Defaults (:data:`DEFAULTS`) were found with :func:`calibrate` on the quickstart run ((a + b) mod 59, nanda model,
213k parameters, 1392 training rows, n_beta = n / ln n = 192) at its memorising (step 100) and grokked (step 460)
checkpoints, localization 100 (the customary strength), mini-batches of 128:

* lr 5e-5 and 1e-4 drift upwards for hundreds of steps (the localization term mixes at rate lr * 100 / 2 per step);
  4e-4 throws loss spikes past ``log(p)`` (divergent); 8e-4 turns NaN. 2e-4 is the largest usable step size.
* 100 burn-in steps left the late checkpoints' traces still climbing (drift ~0.1); 150 burn-in + 150 draws gave
  drift < 0.05, R-hat < 1.04, between-chain spread < 0.06, at 17-20 s of one CPU core per checkpoint.

Over the quickstart run this gives LLC ~33 at initialisation, a peak of ~560 while memorising (step 50), then a
fall through grokking to ~150 at the end: the generalising solution is the more degenerate one.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import math
import random
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import numpy as np
import torch
from jaxtyping import Float
from pydantic import Field
from torch import Tensor, nn

from grokscope.analysis.common import jsonable, model_device
from grokscope.analysis.options import AnalysisOptions, Flag
from grokscope.analysis.spec import AnalysisSpec, RowResult
from grokscope.errors import UserError
from grokscope.losses import loss_dtype as resolve_loss_dtype
from grokscope.losses import loss_function
from grokscope.tasks import ModularTask, Split

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

NAME = "llc"

# Sampler defaults for the small modular-arithmetic models (found with `calibrate`; see the module docstring).
DEFAULTS: dict[str, Any] = {
    "lr": 2e-4,
    "localization": 100.0,
    "num_chains": 4,
    "num_draws": 150,
    "num_burnin": 150,
    "batch_size": 128,
}

# Convergence thresholds (documented in LLCResult).
R_HAT_MAX = 1.1  # split Gelman-Rubin R-hat of the loss traces; the usual 1.1 rule
SPREAD_MAX = 0.1  # between-chain std of the LLC relative to its mean
DRIFT_MAX = 0.1  # change of the LLC between the first and second half of the draws, relative to the LLC

TRACE_POINTS = 50  # to_dict() keeps at most this many block means per chain of the loss trace
CHUNK = 8192  # rows per forward pass when computing the full-data loss at the checkpoint


def _sampler() -> Callable[..., Any]:
    """devinterp's sampler, imported late: it is an optional extra and pulls in transformers."""
    try:
        from devinterp.slt.sampling import sample
    except ImportError:
        raise UserError("llc: install the llc extra: pip install 'grokscope[llc]'") from None
    return sample


def require_sampler() -> None:
    """A one-line :class:`UserError` now when the llc extra is missing, before anything long (training) runs."""
    _sampler()


@contextlib.contextmanager
def _private_rng(device: torch.device) -> Iterator[None]:
    """Restore the torch (CPU and CUDA), NumPy and ``random`` RNG states afterwards: devinterp seeds all of them."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@contextlib.contextmanager
def _frozen_gc() -> Iterator[None]:
    """devinterp calls a full ``gc.collect()`` twice per chain; with TransformerLens and transformers loaded each one
    walks the whole heap (~0.4 s). Freezing the objects that exist now makes it scan only what sampling allocates."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """Hide devinterp's per-chain progress bars and its chain-failure warnings (we report divergence ourselves);
    other warnings are re-issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO()):
            yield
    for w in caught:
        if not str(w.message).startswith("Chain failed"):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


# Diagnostics ------------------------------------------------------------------------------------------------------
def split_r_hat(traces: Float[np.ndarray, "chain draw"]) -> float:
    """Gelman-Rubin R-hat with each chain split in halves, so a trend within chains raises it as disagreement does."""
    half = traces.shape[1] // 2
    if half < 2:
        return math.nan
    seqs = np.concatenate([traces[:, :half], traces[:, -half:]])
    within = seqs.var(axis=1, ddof=1).mean()
    between = half * seqs.mean(axis=1).var(ddof=1)
    if not np.isfinite(within) or within <= 0:
        return math.nan
    pooled = (half - 1) / half * within + between / half
    return float(np.sqrt(pooled / within))


def _blocks(traces: Float[np.ndarray, "chain draw"], points: int) -> tuple[Float[np.ndarray, "chain k"], int]:
    """Means of consecutive blocks of draws, at most ``points`` per chain (a block mean keeps what the LLC averages)."""
    size = max(1, math.ceil(traces.shape[1] / points))
    usable = traces.shape[1] // size * size
    return traces[:, :usable].reshape(traces.shape[0], -1, size).mean(axis=2), size


@dataclass
class LLCResult(RowResult):
    """The LLC at one checkpoint, with the sampler settings and convergence diagnostics.

    ``llc_per_chain[c] = n_beta * (mean of chain c's post-burn-in loss trace - init_loss)``; ``llc_mean`` and
    ``llc_std`` (sample std, ddof 1) are over chains. Diagnostics, and the thresholds ``converged`` uses:

    * ``divergent``: a loss was NaN/inf, or rose above ``init_loss + escape_loss`` (for a task, the loss of a uniform
      guess, ``log(d_vocab_out)``: the chain has left the basin). Never converged.
    * ``r_hat``: split Gelman-Rubin R-hat of the loss traces; chains agree and are stationary below ``R_HAT_MAX`` 1.1.
    * ``spread``: ``llc_std / |llc_mean|``, chains agree below ``SPREAD_MAX`` 0.1.
    * ``drift``: (LLC from the second half of the draws - LLC from the first half) / ``|llc_mean|``; the trace is
      stationary after burn-in when ``|drift| <`` ``DRIFT_MAX`` 0.1 (positive: still climbing, burn-in too short or
      step size too small).

    The row holds ``loss_trace`` as block means (``loss_trace_block`` draws each); the full trace lives in the sidecar
    file (``ARRAYS``).
    """

    ARRAYS = ("loss_trace",)

    llc_mean: float
    llc_std: float
    llc_per_chain: list[float]
    init_loss: float
    n_beta: float
    r_hat: float
    spread: float
    drift: float
    divergent: bool
    converged: bool
    settings: dict[str, Any]
    loss_trace: Float[np.ndarray, "chain draw"] = field(repr=False)

    @property
    def stationary(self) -> bool:
        return not self.divergent and abs(self.drift) < DRIFT_MAX

    def to_dict(self) -> dict[str, Any]:
        out = jsonable({k: v for k, v in self.__dict__.items() if k != "loss_trace"})
        blocks, size = _blocks(self.loss_trace, TRACE_POINTS)
        out["stationary"] = self.stationary
        out["loss_trace"] = jsonable(blocks)
        out["loss_trace_block"] = size  # each point is the mean of this many consecutive draws
        return out


def _diagnose(
    traces: Float[np.ndarray, "chain draw"], init_loss: float, n_beta: float, escape_loss: float | None
) -> dict[str, Any]:
    per_chain = n_beta * (traces.mean(axis=1) - init_loss)
    llc_mean = float(per_chain.mean())
    llc_std = float(per_chain.std(ddof=1)) if len(per_chain) > 1 else math.nan
    finite = bool(np.isfinite(traces).all())
    divergent = not finite or (escape_loss is not None and float(traces.max()) > init_loss + escape_loss)
    half = traces.shape[1] // 2
    usable = finite and half > 0 and llc_mean != 0
    drift = n_beta * float(traces[:, half:].mean() - traces[:, :half].mean()) / abs(llc_mean) if usable else math.nan
    spread = llc_std / abs(llc_mean) if usable else math.nan
    r_hat = split_r_hat(traces) if finite else math.nan
    converged = (
        not divergent and r_hat < R_HAT_MAX and abs(drift) < DRIFT_MAX and (len(per_chain) == 1 or spread < SPREAD_MAX)
    )
    return {
        "llc_mean": llc_mean,
        "llc_std": llc_std,
        "llc_per_chain": per_chain.tolist(),
        "r_hat": r_hat,
        "spread": float(spread),
        "drift": float(drift),
        "divergent": bool(divergent),
        "converged": bool(converged),
    }


# Estimation -------------------------------------------------------------------------------------------------------
def _working_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A private copy to sample from: the caller's module (weights, device, mode, hooks) is never touched."""
    work = copy.deepcopy(model)
    if hasattr(work, "reset_hooks"):  # TransformerLens: drop temporary hooks on the copy only; permanent ones stay
        work.reset_hooks(including_permanent=False)
    work.requires_grad_(True)
    work.train()  # devinterp samples in train mode; L(w*) must be measured in the same mode
    if model_device(work) == device:
        return work
    return work.to(device)


@torch.no_grad()
def _full_loss(model: nn.Module, data: Sequence[Tensor], loss_fn: Callable[..., Tensor]) -> float:
    """The mean loss over every row, in chunks; exact because every row carries the same weight in the mean."""
    n = len(data[0])
    total = 0.0
    for start in range(0, n, CHUNK):
        rows = [t[start : start + CHUNK] for t in data]
        total += float(loss_fn(model, *rows)) * len(rows[0]) / n
    return total


def estimate_llc(
    model: nn.Module,
    data: Sequence[Tensor],
    loss_fn: Callable[..., Tensor],
    *,
    lr: float,
    n_beta: float | None = None,
    localization: float = 0.0,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin: int = 0,
    batch_size: int | None = None,
    seed: int = 0,
    escape_loss: float | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> LLCResult:
    """The LLC of ``model`` at its current weights, for any module and mean-reduced loss.

    ``data`` holds row-aligned tensors (e.g. inputs and targets); ``loss_fn(model, *rows)`` returns the mean loss of
    those rows as a scalar. ``n_beta=None`` uses ``n / ln n`` for ``n`` rows (the WBIC inverse temperature).
    ``batch_size`` is evened out to ``n // ceil(n / batch_size)`` (the effective value is in ``settings``);
    ``None`` samples with the full-data gradient. ``escape_loss``: a loss above ``L(w*) + escape_loss`` marks the
    run divergent (NaN/inf always does). Runs on ``device`` (default: the model's device).

    For example, a linear regression fitted to its least-squares optimum (4 parameters, LLC about 4 / 2)::

        fit = nn.Linear(3, 1)  # ... set to the least-squares solution of (x, y)
        estimate_llc(fit, (x, y), lambda m, x, y: ((m(x) - y) ** 2).mean(), lr=1e-3).llc_mean  # ~ 2.0
    """
    sample = _sampler()
    n = len(data[0])
    if n < 2:
        raise UserError(f"llc: needs at least 2 rows of data, got {n}")
    device = torch.device(device) if device is not None else model_device(model)
    n_beta = n / math.log(n) if n_beta is None else float(n_beta)
    # devinterp drops the last partial batch of its one (replayed) epoch: even out the batches so that fewer than
    # ceil(n / batch_size) rows are left out, not up to batch_size - 1. (A batch larger than n would yield none.)
    batch_size = n if batch_size is None else n // math.ceil(n / min(batch_size, n))
    settings = {
        "lr": lr,
        "n_beta": n_beta,
        "localization": localization,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_burnin": num_burnin,
        "batch_size": batch_size,
        "seed": seed,
    }
    data = [t.to(device) for t in data]
    work = _working_copy(model, device)
    init_loss = _full_loss(work, data, loss_fn)

    def batch_loss(chain_model: nn.Module, ids: Tensor) -> Tensor:
        # devinterp's input_ids are our row indices [i, i]; it wants a (batch, seq - 1) = (batch, 1) per-token loss
        # whose mean it takes, so every entry holds the batch's objective: the mean is exactly loss_fn.
        rows = ids[:, 0]
        return loss_fn(chain_model, *(t[rows] for t in data)).reshape(1, 1).expand(len(rows), 1)

    index_rows = [{"input_ids": torch.tensor([i, i])} for i in range(n)]
    with (
        _private_rng(device),
        _frozen_gc(),
        _quiet(progress),
        tempfile.TemporaryDirectory(prefix="grokscope-llc-") as tmp,
    ):
        samples = sample(
            work,
            index_rows,
            {},
            lr=lr,
            n_beta=n_beta,
            localization=localization,
            num_chains=num_chains,
            num_draws=num_draws,
            num_burnin_steps=num_burnin,
            batch_size=batch_size,
            num_init_loss_batches=1,  # its own L(w*) estimate is discarded; ours covers every row
            init_seed=seed * num_chains,  # devinterp seeds chain c with init_seed + c: keep seeds' chains disjoint
            # Its default feeds every chain the same batches; independent chains make their agreement mean something.
            match_sampling_input_ids_across_chains=False,
            device=str(device),
            output_path=Path(tmp) / "samples.zarr",
            loss_fn=batch_loss,
        )
        # (chain, draw, batch, 1), recorded after burn-in only; load before the temporary directory goes.
        traces = np.asarray(samples.dataset["sampling_loss"].values, dtype=np.float64).mean(axis=(2, 3))
    return LLCResult(
        **_diagnose(traces, init_loss, n_beta, escape_loss),
        init_loss=init_loss,
        n_beta=n_beta,
        settings=settings,
        loss_trace=traces,
    )


def _training_data(task: ModularTask, split: Split | None) -> tuple[Tensor, Tensor]:
    data = task.dataset()
    if split is not None:
        data = data.subset(split.train)
    return data.tokens, data.labels


def _objective(task: ModularTask, loss_fn: str = "softmax", loss_dtype: str = "float64") -> Callable[..., Tensor]:
    loss_function(loss_fn)  # an unknown name fails here, before any sampling
    dtype = resolve_loss_dtype(loss_dtype)

    def loss(model: nn.Module, tokens: Tensor, labels: Tensor) -> Tensor:
        return task.loss(model(tokens), labels, dtype, loss_fn=loss_fn)

    return loss


def compute(
    model: GrokTransformer,
    task: ModularTask,
    *,
    split: Split | None = None,
    lr: float = DEFAULTS["lr"],
    n_beta: float | None = None,
    localization: float = DEFAULTS["localization"],
    num_chains: int = DEFAULTS["num_chains"],
    num_draws: int = DEFAULTS["num_draws"],
    num_burnin: int = DEFAULTS["num_burnin"],
    batch_size: int | None = DEFAULTS["batch_size"],
    seed: int = 0,
    progress: bool = False,
    loss_fn: str = "softmax",
    loss_dtype: str = "float64",
) -> LLCResult:
    """The LLC of the training objective at this checkpoint, over the training split (every example without one).

    ``n_beta=None`` uses ``n / ln n`` for the ``n`` training examples. A loss above ``log(d_vocab_out)`` over the
    checkpoint's loss (worse than a uniform guess, under softmax and StableMax alike) counts as divergence.
    ``loss_fn`` is the run's ``train.loss_fn`` (``"softmax"`` or ``"stablemax"``); the LLC is a property of the
    objective's landscape, so a StableMax run must be sampled under StableMax. ``loss_dtype`` (``"float32"`` or
    ``"float64"``, never below the model's dtype) defaults to float64, which keeps the tiny losses of a grokked
    model resolvable next to ``L(w*)``. Both are recorded in ``settings``.
    """
    objective = _objective(task, loss_fn, loss_dtype)
    result = estimate_llc(
        model,
        _training_data(task, split),
        objective,
        lr=lr,
        n_beta=n_beta,
        localization=localization,
        num_chains=num_chains,
        num_draws=num_draws,
        num_burnin=num_burnin,
        batch_size=batch_size,
        seed=seed,
        escape_loss=math.log(task.d_vocab_out),
        progress=progress,
    )
    result.settings.update(loss_fn=loss_fn, loss_dtype=loss_dtype)
    return result


# Calibration ------------------------------------------------------------------------------------------------------
@dataclass
class CalibrationResult:
    """A sweep of step size x n_beta at one checkpoint, and the recommended pair.

    Rule: n_betas are taken in the order given (preference); at the first n_beta where some step size is *usable*
    (not divergent, stationary, chains agree: ``converged``), recommend the largest usable step size. Larger steps mix
    faster and need less burn-in; beyond the largest usable one the discretisation blows up or drifts.
    """

    results: list[LLCResult]
    recommended: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        points = [
            {
                "lr": r.settings["lr"],
                "n_beta": r.n_beta,
                "llc_mean": r.llc_mean,
                "llc_std": r.llc_std,
                "stationary": r.stationary,
                "divergent": r.divergent,
                "converged": r.converged,
                "r_hat": r.r_hat,
                "drift": r.drift,
                "spread": r.spread,
            }
            for r in self.results
        ]
        return jsonable({"points": points, "recommended": self.recommended})


def calibrate(
    model: GrokTransformer,
    task: ModularTask,
    *,
    split: Split | None = None,
    lrs: Sequence[float] = (5e-5, 1e-4, 2e-4, 4e-4, 8e-4),
    n_betas: Sequence[float | None] = (None,),
    **sampler: Any,
) -> CalibrationResult:
    """Run :func:`compute` for every ``(lr, n_beta)`` and recommend a pair (rule in :class:`CalibrationResult`).

    ``sampler`` passes the other :func:`compute` settings (localization, num_chains, num_draws, ...).
    """
    results = [compute(model, task, split=split, lr=lr, n_beta=n_beta, **sampler) for n_beta in n_betas for lr in lrs]
    recommended = None
    for n_beta in dict.fromkeys(r.n_beta for r in results):  # given order, resolved (None -> n / ln n)
        usable = [r for r in results if r.n_beta == n_beta and r.converged]
        if usable:
            best = max(usable, key=lambda r: r.settings["lr"])
            recommended = {"lr": best.settings["lr"], "n_beta": best.n_beta}
            break
    return CalibrationResult(results, recommended)


# Settings from a config or the command line -----------------------------------------------------------------------
class SamplerSettings(AnalysisOptions):
    """:func:`compute`'s sampler keywords as a config section (``llc:`` of a staged experiment) or the
    ``grokscope analyze --llc-*`` flags give them, validated; the defaults are :func:`compute`'s.

    The bounds keep the sampler meaningful: a positive step size and n_beta, at least 4 draws (split R-hat needs two
    per half-chain), and seeds that stay in NumPy's range when devinterp seeds chain ``c`` with
    ``seed * num_chains + c``.
    """

    FLAG_PREFIX: ClassVar[str] = "--llc-"
    HELP_PREFIX: ClassVar[str] = "LLC: "

    lr: Annotated[float, Flag("SGLD step size.", default="2e-4")] = Field(
        DEFAULTS["lr"], gt=0, description="SGLD step size"
    )
    n_beta: Annotated[float | None, Flag("inverse temperature.", default="n / ln n")] = Field(
        None, gt=0, description="inverse temperature (null: n / ln n of the training rows)"
    )
    localization: Annotated[float, Flag("localization strength.", default="100")] = Field(
        DEFAULTS["localization"], ge=0, description="strength of the pull towards w*"
    )
    num_chains: Annotated[int, Flag("SGLD chains.", default="4")] = Field(DEFAULTS["num_chains"], ge=1, le=64)
    num_draws: Annotated[int, Flag("draws per chain.", default="150")] = Field(
        DEFAULTS["num_draws"], ge=4, le=1_000_000, description="draws per chain after burn-in"
    )
    num_burnin: Annotated[int, Flag("burn-in steps per chain.", default="150")] = Field(
        DEFAULTS["num_burnin"], ge=0, le=1_000_000
    )
    batch_size: Annotated[
        int | None, Flag("mini-batch rows, or full for the full batch.", default="128", words=(("full", None),))
    ] = Field(DEFAULTS["batch_size"], ge=1, description="mini-batch rows (null: full batch)")
    seed: Annotated[int, Flag("sampler seed.", default="0")] = Field(0, ge=0, le=2**24)

    def options(self) -> dict[str, Any]:
        """The settings that differ from :func:`compute`'s defaults, as its keywords: what the analysis runner
        records with each cached row, so that an estimate with default settings is found again however it was asked
        for (``grokscope analyze --llc``, an experiment's ``llc: {}``, ``over_checkpoints``)."""
        fields = SamplerSettings.model_fields  # a subclass's own fields (an experiment's) are not compute's
        return {k: getattr(self, k) for k, f in fields.items() if getattr(self, k) != f.default}

    def keywords(self) -> dict[str, Any]:
        return self.options()


# Slow (SGLD chains per checkpoint) and needs the optional devinterp extra: only when asked for by name.
SPEC = AnalysisSpec(
    name=NAME,
    compute=compute,
    result=LLCResult,
    inputs=frozenset({"split", "objective"}),
    in_all=False,
    options=(SamplerSettings,),
)
