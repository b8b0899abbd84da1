"""Optimisation as configuration: optimizers, learning-rate schedules, batch modes, one update.

A learner never builds a ``torch.optim`` object itself. It holds an
:class:`OptimConfig` (read from a spec with :meth:`OptimConfig.from_dict`),
asks :func:`batch_size` how many samples to draw, and hands each loss to a
:class:`GradientStepper`, which checks the loss, adds the L1 penalty, clips
the gradient, updates the weights, advances the schedule and reports the
learning rate that update used.

Every schedule is a stock ``torch.optim.lr_scheduler`` class with no lambdas,
so its state is plain numbers and survives ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar

import torch
from pydantic import AfterValidator, Field, model_validator
from torch.optim import lr_scheduler

from agents.errors import ConfigError
from agents.names import BATCH_MODES, OPTIMIZERS, SCHEDULES
from agents.settings import Settings, one_of

LOSS_WINDOW = 100
"""How many recent finite losses the explosion check takes its median over."""
LOSS_HISTORY_MIN = 10
"""Losses seen before a loss can count as exploding; fewer give no trustworthy median."""
LOSS_FLOOR = 1.0
"""Floor of the median in the explosion check, so losses that converge to zero never alarm."""


class DivergenceError(RuntimeError):
    """Training diverged (a NaN or infinite loss or gradient, or an exploding loss)."""


class OptimConfig(Settings):
    """How a policy's weights are updated: optimizer, schedule, batching and regularisation."""

    section: ClassVar[str] = "optim"

    optimizer: Annotated[str, AfterValidator(one_of(OPTIMIZERS))] = "adam"
    """One of :data:`OPTIMIZERS`: plain ``sgd``, SGD with ``momentum`` or ``nesterov``
    momentum, ``adam``, ``adamw`` (decoupled weight decay) or ``rmsprop``."""
    lr: float = Field(default=1e-3, gt=0, allow_inf_nan=False)
    """Initial (peak, for ``warmup-cosine``) learning rate; > 0."""
    momentum: float = Field(default=0.9, ge=0, lt=1)
    """Momentum of ``momentum``, ``nesterov`` and ``rmsprop``, in [0, 1); > 0 for the SGD
    momentum optimizers. Ignored by ``sgd``, ``adam`` and ``adamw``."""
    weight_decay: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """L2 coefficient, torch's ``weight_decay``: added to the gradient, except for ``adamw``
    where the weights shrink by ``lr * weight_decay`` each update (decoupled); >= 0."""
    l1: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """L1 coefficient: ``l1 * sum(|w|)`` over weight matrices (not biases) joins the loss; >= 0."""
    schedule: Annotated[str, AfterValidator(one_of(SCHEDULES))] = "constant"
    """One of :data:`SCHEDULES`; update ``k`` (from 0) uses ``lr`` times a factor of ``k``."""
    step_size: int = Field(default=1000, ge=1)
    """Updates between decays for ``step``; >= 1."""
    gamma: float = Field(default=0.5, gt=0, le=1)
    """Factor for ``step``: update ``k`` uses ``lr * gamma ** (k // step_size)``; in (0, 1]."""
    decay: float = Field(default=0.999, gt=0, le=1)
    """Per-update factor for ``exponential``: update ``k`` uses ``lr * decay ** k``; in (0, 1]."""
    warmup: int = Field(default=100, ge=0)
    """Warm-up updates for ``warmup-cosine``: the learning rate rises linearly from
    ``lr * warmup_start_factor`` towards ``lr``, then follows a cosine; >= 0."""
    warmup_start_factor: float = Field(default=0.01, gt=0, le=1)
    """Fraction of ``lr`` that the ``warmup-cosine`` warm-up starts from; in (0, 1]."""
    min_lr: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Floor the ``cosine`` and ``warmup-cosine`` schedules end at; in [0, lr]."""
    batch_mode: Annotated[str, AfterValidator(one_of(BATCH_MODES))] = "mini"
    """One of :data:`BATCH_MODES`: ``full`` (all samples), ``mini`` (``batch_size``) or
    ``stochastic`` (one sample)."""
    batch_size: int = Field(default=64, ge=1)
    """Samples per update for ``mini``; >= 1."""
    grad_clip: float | None = Field(default=10.0, gt=0)
    """Largest global gradient norm (L2 over all parameters); ``None`` or ``inf`` (TOML has
    no null) for no clipping; > 0."""
    explode_factor: float = Field(default=1e4, gt=1)
    """A loss counts as exploding when ``|loss|`` exceeds this times the median ``|loss|`` of the
    last :data:`LOSS_WINDOW` updates (floored at :data:`LOSS_FLOOR`); > 1, ``inf`` to never."""

    @model_validator(mode="after")
    def _consistent(self) -> OptimConfig:
        if self.optimizer in ("momentum", "nesterov") and self.momentum == 0:
            raise ValueError(f"momentum must be > 0 for optimizer {self.optimizer!r}")
        if self.schedule in ("cosine", "warmup-cosine") and self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr!r}) must not exceed lr ({self.lr!r}) "
                             "for a cosine schedule")
        return self


def describe(cfg: OptimConfig) -> str:
    """A short label for plot legends.

    For example ``"nesterov lr=0.01 momentum=0.9, cosine, mini-batch 64"``.
    Regularisation appears as a fourth part only where it departs from the defaults.
    """
    optimizer = f"{cfg.optimizer} lr={cfg.lr:g}"
    if cfg.optimizer in ("momentum", "nesterov", "rmsprop"):
        optimizer += f" momentum={cfg.momentum:g}"

    schedule = {
        "constant": "constant",
        "step": f"step gamma={cfg.gamma:g} every {cfg.step_size}",
        "exponential": f"exponential decay={cfg.decay:g}",
        "cosine": "cosine",
        "warmup-cosine": f"warmup {cfg.warmup} + cosine",
    }[cfg.schedule]
    if cfg.schedule in ("cosine", "warmup-cosine") and cfg.min_lr > 0:
        schedule += f" to {cfg.min_lr:g}"

    batch = {
        "full": "full-batch",
        "mini": f"mini-batch {cfg.batch_size}",
        "stochastic": "stochastic",
    }[cfg.batch_mode]

    parts = [optimizer, schedule, batch]
    regularisation = []
    if cfg.weight_decay > 0:
        regularisation.append(f"wd={cfg.weight_decay:g}")
    if cfg.l1 > 0:
        regularisation.append(f"l1={cfg.l1:g}")
    default_clip = OptimConfig.model_fields["grad_clip"].default
    if cfg.grad_clip is None or math.isinf(cfg.grad_clip):
        regularisation.append("no clip")
    elif cfg.grad_clip != default_clip:
        regularisation.append(f"clip={cfg.grad_clip:g}")
    if regularisation:
        parts.append(" ".join(regularisation))
    return ", ".join(parts)


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer ``cfg.optimizer`` names, over ``params``.

    Every one runs its ``foreach`` implementation: on the CPU the same arithmetic as the
    loop over tensors (the weights after a training match bit for bit), in a few calls
    instead of several per tensor, which is most of an update's cost on a small network.
    """
    params = list(params)
    common: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "foreach": True}
    match cfg.optimizer:
        case "sgd":
            return torch.optim.SGD(params, **common)
        case "momentum":
            return torch.optim.SGD(params, momentum=cfg.momentum, **common)
        case "nesterov":
            return torch.optim.SGD(params, momentum=cfg.momentum, nesterov=True, **common)
        case "adam":
            return torch.optim.Adam(params, **common)
        case "adamw":
            return torch.optim.AdamW(params, **common)
        case "rmsprop":
            return torch.optim.RMSprop(params, momentum=cfg.momentum, **common)
    raise ConfigError(f"optimizer={cfg.optimizer!r}: unknown")  # unreachable after validation


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_updates: int
) -> lr_scheduler.LRScheduler:
    """The schedule ``cfg.schedule`` names, stepped once per update, over ``total_updates``.

    Update ``k`` (counting from 0) uses:

    - ``constant``: ``lr``;
    - ``step``: ``lr * gamma ** (k // step_size)``;
    - ``exponential``: ``lr * decay ** k``;
    - ``cosine``: ``min_lr + (lr - min_lr) * (1 + cos(pi * k / T)) / 2``, ``T = total_updates``;
    - ``warmup-cosine``: ``lr * (s + (1 - s) * k / warmup)`` for ``k < warmup``
      (``s = warmup_start_factor``), then the cosine over the remaining
      ``T = max(1, total_updates - warmup)`` updates at ``k - warmup``.

    Raises:
        ValueError: ``total_updates`` is below 1.
    """
    if total_updates < 1:
        raise ValueError(f"total_updates={total_updates}: must be >= 1")
    match cfg.schedule:
        case "constant":
            return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        case "step":
            return lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        case "exponential":
            return lr_scheduler.ExponentialLR(optimizer, gamma=cfg.decay)
        case "cosine":
            return lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=total_updates, eta_min=cfg.min_lr
            )
        case "warmup-cosine":
            cosine_updates = max(1, total_updates - cfg.warmup)
            if cfg.warmup == 0:
                return lr_scheduler.CosineAnnealingLR(
                    optimizer, T_max=cosine_updates, eta_min=cfg.min_lr
                )
            warm = lr_scheduler.LinearLR(
                optimizer,
                start_factor=cfg.warmup_start_factor,
                end_factor=1.0,
                total_iters=cfg.warmup,
            )
            cosine = lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=cosine_updates, eta_min=cfg.min_lr
            )
            return lr_scheduler.SequentialLR(
                optimizer, schedulers=[warm, cosine], milestones=[cfg.warmup]
            )
    raise ConfigError(f"schedule={cfg.schedule!r}: unknown")  # unreachable after validation


def batch_size(cfg: OptimConfig, available: int) -> int:
    """Samples to draw for one update when ``available`` are at hand.

    Raises:
        ValueError: ``available`` is below 1.
    """
    if available < 1:
        raise ValueError(f"available={available}: no samples to draw a batch from")
    sizes = {"full": available, "mini": min(cfg.batch_size, available)}
    return sizes.get(cfg.batch_mode, 1)  # stochastic: one sample


class GradientStepper:
    """Does every weight update of one model: checks, penalty, backward, clip, step, schedule.

    The schedule advances for the first ``total_updates`` updates; later updates
    keep the learning rate the schedule ended at (a cosine stays at ``min_lr``
    instead of rising again).
    """

    def __init__(self, model: torch.nn.Module, cfg: OptimConfig, total_updates: int) -> None:
        self.cfg = cfg
        self.total_updates = total_updates
        self._params = [p for p in model.parameters() if p.requires_grad]
        # Weight matrices (and conv kernels) only: biases and norm scales are not penalised.
        self._l1_params = [p for p in self._params if p.ndim >= 2]
        self.optimizer = make_optimizer(self._params, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg, total_updates)
        self._constant = cfg.schedule == "constant"
        self._updates = 0
        self._scheduled = 0  # schedule steps taken: one per update slot (see step())
        self._recent: deque[float] = deque(maxlen=LOSS_WINDOW)

    @property
    def updates(self) -> int:
        """Updates done so far (a diverged attempt does not count)."""
        return self._updates

    @property
    def lr(self) -> float:
        """The learning rate the next update will use."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, loss: torch.Tensor, *, slots: int = 1) -> dict[str, float]:
        """Update the weights to lower ``loss`` (a scalar), then advance the schedule.

        ``slots``: how many planned updates this one stands for (a learner that merges
        the batches of several due updates into one step passes their number), so the
        schedule moves as far as it would have over them.

        Returns:
            ``lr``: the learning rate this update used; ``loss``: the loss as given,
            without the penalty; ``l1_penalty``: the L1 term added before the
            backward pass; ``grad_norm``: the global gradient norm before clipping.

        Raises:
            DivergenceError: The loss is NaN, infinite or exploding, or the gradient
                norm is not finite. The weights, optimizer and schedule are then untouched.
        """
        value = float(loss.detach())
        self._check_loss(value)

        self.optimizer.zero_grad(set_to_none=True)
        penalty = self._l1_penalty()
        (loss if penalty is None else loss + penalty).backward()
        grad_norm = self._clip_gradients()
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise DivergenceError(
                f"gradient norm is {grad_norm} at update {self._updates} (loss {value:g})"
            )

        lr = self.lr
        self.optimizer.step()
        for _ in range(slots):
            if self._scheduled < self.total_updates:
                if not self._constant:  # a constant schedule's step changes nothing
                    self.scheduler.step()
                self._scheduled += 1
        self._updates += 1
        self._recent.append(abs(value))
        return {
            "lr": lr,
            "loss": value,
            "l1_penalty": 0.0 if penalty is None else float(penalty.detach()),
            "grad_norm": grad_norm,
        }

    def _check_loss(self, value: float) -> None:
        if not math.isfinite(value):
            raise DivergenceError(f"loss is {value} at update {self._updates}")
        if len(self._recent) < LOSS_HISTORY_MIN:
            return
        limit = self.cfg.explode_factor * max(statistics.median(self._recent), LOSS_FLOOR)
        if abs(value) > limit:
            raise DivergenceError(
                f"loss {value:g} at update {self._updates} exceeds {limit:g} "
                f"({self.cfg.explode_factor:g} x the recent median): exploding"
            )

    def _l1_penalty(self) -> torch.Tensor | None:
        """The L1 term, or None where there is none (adding a zero would change nothing)."""
        if self.cfg.l1 == 0 or not self._l1_params:
            return None
        return self.cfg.l1 * torch.stack([p.abs().sum() for p in self._l1_params]).sum()

    def _clip_gradients(self) -> float:
        """Scale the gradients to a global norm of at most ``grad_clip``; the norm before.

        What :func:`torch.nn.utils.clip_grad_norm_` computes, to the last digit, for the
        one device and dtype of a policy network, without its grouping of the tensors
        by device (most of its cost on these small networks); and gradients within the
        limit are left alone rather than multiplied by exactly one.
        """
        grads = [p.grad for p in self._params if p.grad is not None]
        if not grads:
            return 0.0
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        if self.cfg.grad_clip is not None:
            coef = self.cfg.grad_clip / (norm + 1e-6)
            if float(coef) < 1.0:
                torch._foreach_mul_(grads, coef)
        return float(norm)

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, schedule, update count and recent losses; tensors and primitives only.

        The model's own weights are not included: save ``model.state_dict()`` beside it.
        """
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "updates": self._updates,
            "scheduled": self._scheduled,
            "total_updates": self.total_updates,
            "recent_losses": list(self._recent),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a stepper built with the same config and horizon.

        Raises:
            ValueError: The state was saved with a different ``total_updates``.
        """
        if state["total_updates"] != self.total_updates:
            raise ValueError(
                f"total_updates={self.total_updates}: the state was saved with "
                f"{state['total_updates']}"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(dict(state["scheduler"]))
        self._updates = int(state["updates"])
        # states saved before slots existed: one schedule step per update
        self._scheduled = int(state.get("scheduled", min(self._updates, self.total_updates)))
        self._recent = deque((float(v) for v in state["recent_losses"]), maxlen=LOSS_WINDOW)
