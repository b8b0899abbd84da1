"""Optimizers, schedules, batch modes and the update step, checked against hand-computed values."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch

from agents.optim import (
    BATCH_MODES,
    LOSS_HISTORY_MIN,
    OPTIMIZERS,
    SCHEDULES,
    ConfigError,
    DivergenceError,
    GradientStepper,
    OptimConfig,
    batch_size,
    describe,
    make_optimizer,
    make_scheduler,
)


def tiny(seed: int = 0, n_in: int = 3) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(n_in, 1)


def data(seed: int = 1, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return x, y


def mse(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model(x) - y) ** 2).mean()


def zero_grad_loss(model: torch.nn.Linear) -> torch.Tensor:
    """A loss connected to the weights whose data gradient is exactly zero."""
    return 0.0 * model.weight.sum() + 0.0 * model.bias.sum()


def params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def save_load(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_plain(obj: Any, where: str = "state") -> None:
    """Only tensors and primitives, nested in dicts, lists and tuples."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            assert isinstance(key, str | int), f"{where}: key {key!r}"
            assert_plain(value, f"{where}.{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            assert_plain(value, f"{where}[{i}]")
    else:
        assert obj is None or isinstance(obj, bool | int | float | str | torch.Tensor), (
            f"{where}: {type(obj).__name__}"
        )


# --- optimizers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_descends(name: str) -> None:
    model = tiny()
    x, y = data()
    stepper = GradientStepper(model, OptimConfig(optimizer=name, lr=0.01), total_updates=10)
    before = params(model)
    loss = mse(model, x, y)
    grads = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)

    stepper.step(loss)

    moved = [p.detach() - b for p, b in zip(model.parameters(), before)]
    # The change points downhill and the loss drops.
    assert sum(float((d * g).sum()) for d, g in zip(moved, grads)) < 0
    assert float(mse(model, x, y).detach()) < float(loss.detach())


def momentum_trajectory(name: str, lr: float, mu: float, w0: float, steps: int) -> list[float]:
    """Hand-computed torch SGD on L = w^2 / 2 (gradient w): buffer b = mu b + g."""
    w, buf, out = w0, None, []
    for _ in range(steps):
        g = w
        if name == "sgd":
            update = g
        else:
            buf = g if buf is None else mu * buf + g
            update = g + mu * buf if name == "nesterov" else buf
        w -= lr * update
        out.append(w)
    return out


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov"])
def test_sgd_family_follows_its_update_rule(name: str) -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    cfg = OptimConfig(optimizer=name, lr=0.1, momentum=0.9, grad_clip=None)
    stepper = GradientStepper(model, cfg, total_updates=5)
    got = []
    for _ in range(5):
        stepper.step(0.5 * (model.weight**2).sum())
        got.append(float(model.weight.detach()))
    assert got == pytest.approx(momentum_trajectory(name, 0.1, 0.9, 2.0, 5), rel=1e-6)


def test_momentum_and_nesterov_trajectories_differ_from_sgd() -> None:
    final = {
        name: momentum_trajectory(name, 0.1, 0.9, 2.0, 5)[-1]
        for name in ("sgd", "momentum", "nesterov")
    }
    assert len({round(v, 6) for v in final.values()}) == 3


def test_adamw_decouples_weight_decay() -> None:
    # Zero data gradient: AdamW shrinks by exactly lr * wd; Adam's L2 goes through the
    # normalisation and moves each weight by about lr whatever its size.
    lr, wd = 0.1, 0.1
    decoupled, coupled = tiny(), tiny()
    before = params(decoupled)[0]
    GradientStepper(decoupled, OptimConfig(optimizer="adamw", lr=lr, weight_decay=wd), 1).step(
        zero_grad_loss(decoupled)
    )
    GradientStepper(coupled, OptimConfig(optimizer="adam", lr=lr, weight_decay=wd), 1).step(
        zero_grad_loss(coupled)
    )
    torch.testing.assert_close(decoupled.weight.detach(), before * (1 - lr * wd))
    torch.testing.assert_close(
        (before - coupled.weight.detach()).abs(), torch.full_like(before, lr), rtol=1e-3, atol=0
    )


def test_make_optimizer_builds_the_named_torch_class() -> None:
    expected = {
        "sgd": (torch.optim.SGD, {"momentum": 0, "nesterov": False}),
        "momentum": (torch.optim.SGD, {"momentum": 0.8, "nesterov": False}),
        "nesterov": (torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
        "adam": (torch.optim.Adam, {}),
        "adamw": (torch.optim.AdamW, {"weight_decay": 0.01}),
        "rmsprop": (torch.optim.RMSprop, {"momentum": 0.8}),
    }
    for name, (cls, group) in expected.items():
        cfg = OptimConfig(optimizer=name, lr=0.02, momentum=0.8, weight_decay=0.01)
        opt = make_optimizer(tiny().parameters(), cfg)
        assert type(opt) is cls
        assert opt.param_groups[0]["lr"] == 0.02
        for key, value in group.items():
            assert opt.param_groups[0][key] == value, (name, key)


# --- schedules ----------------------------------------------------------------------------------

LR, MIN_LR, TOTAL = 0.1, 1e-3, 20
SCHEDULE_CFG = {
    "step_size": 3,
    "gamma": 0.5,
    "decay": 0.9,
    "warmup": 5,
    "warmup_start_factor": 0.1,
    "min_lr": MIN_LR,
}


def cosine(k: int, t: int) -> float:
    return MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * k / t)) / 2


def expected_lr(schedule: str, k: int) -> float:
    """The learning rate update k (from 0) should use, in closed form."""
    k = min(k, TOTAL)  # the schedule holds its last value after total_updates
    if schedule == "constant":
        return LR
    if schedule == "step":
        return LR * 0.5 ** (k // 3)
    if schedule == "exponential":
        return LR * 0.9**k
    if schedule == "cosine":
        return cosine(k, TOTAL)
    if k < 5:
        return LR * (0.1 + 0.9 * k / 5)
    return cosine(k - 5, TOTAL - 5)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_gives_its_closed_form(schedule: str) -> None:
    model = tiny()
    cfg = OptimConfig(optimizer="sgd", lr=LR, schedule=schedule, **SCHEDULE_CFG)
    stepper = GradientStepper(model, cfg, total_updates=TOTAL)
    got = [stepper.step(zero_grad_loss(model))["lr"] for _ in range(TOTAL + 5)]
    want = [expected_lr(schedule, k) for k in range(TOTAL + 5)]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert stepper.updates == TOTAL + 5


def test_schedules_really_move() -> None:
    # Guards the closed forms above against all being trivially constant.
    assert expected_lr("step", 3) == LR / 2
    assert expected_lr("warmup-cosine", 0) == pytest.approx(LR / 10)
    assert expected_lr("warmup-cosine", 5) == LR
    assert expected_lr("cosine", TOTAL) == pytest.approx(MIN_LR)
    assert expected_lr("cosine", TOTAL + 3) == pytest.approx(MIN_LR)


def test_warmup_cosine_without_warmup_is_cosine() -> None:
    model = tiny()
    cfg = OptimConfig(optimizer="sgd", lr=LR, schedule="warmup-cosine", warmup=0, min_lr=MIN_LR)
    stepper = GradientStepper(model, cfg, total_updates=TOTAL)
    got = [stepper.step(zero_grad_loss(model))["lr"] for _ in range(TOTAL)]
    assert got == pytest.approx([cosine(k, TOTAL) for k in range(TOTAL)], rel=1e-9)


def test_reported_lr_is_the_lr_the_update_used() -> None:
    # L = c . w has gradient c, so plain SGD moves w by exactly -lr * c.
    model = torch.nn.Linear(3, 1, bias=False)
    c = torch.tensor([[1.0, -2.0, 3.0]])
    cfg = OptimConfig(optimizer="sgd", lr=0.1, schedule="step", step_size=3, gamma=0.5)
    stepper = GradientStepper(model, cfg, total_updates=10)
    lrs = []
    for _ in range(5):
        before = model.weight.detach().clone()
        lr = stepper.step((c * model.weight).sum())["lr"]
        torch.testing.assert_close(model.weight.detach() - before, -lr * c)
        lrs.append(lr)
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])


def test_scheduler_needs_a_horizon() -> None:
    opt = make_optimizer(tiny().parameters(), OptimConfig())
    with pytest.raises(ValueError, match="total_updates"):
        make_scheduler(opt, OptimConfig(schedule="cosine"), 0)


# --- batches ------------------------------------------------------------------------------------


def test_batch_size_per_mode() -> None:
    assert [batch_size(OptimConfig(batch_mode="full"), n) for n in (1, 10, 500)] == [1, 10, 500]
    mini = OptimConfig(batch_mode="mini", batch_size=32)
    assert [batch_size(mini, n) for n in (1, 10, 500)] == [1, 10, 32]
    stochastic = OptimConfig(batch_mode="stochastic", batch_size=32)
    assert [batch_size(stochastic, n) for n in (1, 10, 500)] == [1, 1, 1]
    assert set(BATCH_MODES) == {"full", "mini", "stochastic"}
    with pytest.raises(ValueError, match="available"):
        batch_size(mini, 0)


# --- regularisation and clipping ----------------------------------------------------------------


def test_l1_pulls_weights_toward_zero_and_spares_biases() -> None:
    model = tiny()
    w, b = params(model)
    cfg = OptimConfig(optimizer="sgd", lr=0.01, l1=0.5, grad_clip=None)
    report = GradientStepper(model, cfg, 1).step(zero_grad_loss(model))
    torch.testing.assert_close(model.weight.detach(), w - 0.01 * 0.5 * w.sign())
    assert torch.equal(model.bias.detach(), b)
    assert model.weight.detach().abs().sum() < w.abs().sum()
    assert report["l1_penalty"] == pytest.approx(0.5 * float(w.abs().sum()))
    assert report["loss"] == 0.0


def test_weight_decay_shrinks_weights() -> None:
    model = tiny()
    w, b = params(model)
    cfg = OptimConfig(optimizer="sgd", lr=0.1, weight_decay=0.2)
    GradientStepper(model, cfg, 1).step(zero_grad_loss(model))
    torch.testing.assert_close(model.weight.detach(), w * (1 - 0.1 * 0.2))
    torch.testing.assert_close(model.bias.detach(), b * (1 - 0.1 * 0.2))


@pytest.mark.parametrize("clip", [None, math.inf, 1.0])
def test_grad_clip_caps_the_update(clip: float | None) -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    c = torch.tensor([[60.0, 80.0]])  # gradient norm 100
    before = model.weight.detach().clone()
    cfg = OptimConfig(optimizer="sgd", lr=1.0, grad_clip=clip)
    report = GradientStepper(model, cfg, 1).step((c * model.weight).sum())
    step_norm = float((model.weight.detach() - before).norm())
    assert report["grad_norm"] == pytest.approx(100.0)
    assert step_norm == pytest.approx(100.0 if clip is None or clip == math.inf else 1.0, rel=1e-5)


@pytest.mark.parametrize("clip", [None, 0.05, 1e3])
def test_grad_clip_matches_torch_to_the_last_digit(clip: float | None) -> None:
    """The stepper's clipping is clip_grad_norm_'s, below, at and above the limit."""
    torch.manual_seed(3)
    x, y = torch.randn(32, 5), torch.randn(32, 2)
    ours, theirs = (torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(),
                                        torch.nn.Linear(8, 2)) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    cfg = OptimConfig(optimizer="adam", lr=0.01, grad_clip=clip)
    stepper = GradientStepper(ours, cfg, 10)
    optimizer = torch.optim.Adam(theirs.parameters(), lr=0.01)
    for _ in range(3):
        report = stepper.step(torch.nn.functional.mse_loss(ours(x), y))
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(theirs(x), y).backward()
        norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(),
                                              math.inf if clip is None else clip)
        optimizer.step()
        assert report["grad_norm"] == float(norm)
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    if clip == 0.05:
        assert report["grad_norm"] > clip  # the limit was in force


# --- divergence ---------------------------------------------------------------------------------


def test_nan_loss_raises_before_touching_weights() -> None:
    model = tiny()
    stepper = GradientStepper(model, OptimConfig(optimizer="adam"), 10)
    before = params(model)
    with pytest.raises(DivergenceError, match="nan") as err:
        stepper.step(model.weight.sum() * float("nan"))
    assert "\n" not in str(err.value)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert stepper.updates == 0
    assert stepper.optimizer.state_dict()["state"] == {}


def test_infinite_gradient_raises_without_stepping() -> None:
    model = tiny()
    stepper = GradientStepper(model, OptimConfig(optimizer="sgd", lr=0.1), 10)
    before = params(model)
    # sqrt at 0: the loss is finite (0) but its gradient is not.
    loss = torch.sqrt((model.weight - model.weight.detach()) ** 2 + 0.0).sum()
    loss = loss + torch.sqrt(model.bias - model.bias.detach()).sum()
    with pytest.raises(DivergenceError, match="gradient norm"):
        stepper.step(loss)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert stepper.updates == 0
    assert stepper.lr == 0.1


def test_exploding_loss_raises_before_touching_weights() -> None:
    model = tiny()
    x, y = data()
    stepper = GradientStepper(model, OptimConfig(optimizer="sgd", lr=1e-3), 100)
    for _ in range(LOSS_HISTORY_MIN):
        stepper.step(mse(model, x, y) + 1.0)
    stepper.step(1e3 * mse(model, x, y))  # large, but well below 1e4 x the median: fine
    before = params(model)
    with pytest.raises(DivergenceError, match="exploding"):
        stepper.step(1e6 * (mse(model, x, y) + 1.0))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert stepper.updates == LOSS_HISTORY_MIN + 1


def test_explosion_check_can_be_switched_off() -> None:
    model = tiny()
    stepper = GradientStepper(model, OptimConfig(lr=1e-6, explode_factor=math.inf), 100)
    for _ in range(LOSS_HISTORY_MIN):
        stepper.step(model.weight.sum() * 0 + 1.0)
    stepper.step(model.weight.sum() * 0 + 1e30)
    assert stepper.updates == LOSS_HISTORY_MIN + 1


# --- save and resume ----------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_resumed_stepper_continues_identically(schedule: str, optimizer: str) -> None:
    cfg = OptimConfig(
        optimizer=optimizer, lr=0.05, schedule=schedule, l1=1e-3, grad_clip=0.5, **SCHEDULE_CFG
    )
    x, y = data()
    total, stop, more = 12, 3, 11  # saved in the warm-up; resumed past its end and the horizon

    straight = tiny()
    stepper = GradientStepper(straight, cfg, total)
    straight_lrs = [stepper.step(mse(straight, x, y))["lr"] for _ in range(stop + more)]

    first = tiny()
    stepper = GradientStepper(first, cfg, total)
    for _ in range(stop):
        stepper.step(mse(first, x, y))
    state = stepper.state_dict()
    assert_plain(state)
    assert_plain(stepper.scheduler.state_dict())
    saved = save_load({"model": first.state_dict(), "stepper": state})

    resumed = tiny(seed=99)
    resumed.load_state_dict(saved["model"])
    stepper = GradientStepper(resumed, cfg, total)
    stepper.load_state_dict(saved["stepper"])
    assert stepper.updates == stop
    resumed_lrs = [stepper.step(mse(resumed, x, y))["lr"] for _ in range(more)]

    assert resumed_lrs == straight_lrs[stop:]
    for a, b in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(a, b)


def test_resume_with_another_horizon_is_refused() -> None:
    model = tiny()
    state = GradientStepper(model, OptimConfig(schedule="cosine"), 10).state_dict()
    with pytest.raises(ValueError, match="total_updates"):
        GradientStepper(model, OptimConfig(schedule="cosine"), 20).load_state_dict(state)


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("optimizer", "adagrad"),
        ("schedule", "linear"),
        ("batch_mode", "tiny"),
        ("lr", 0.0),
        ("lr", -1e-3),
        ("lr", float("nan")),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("weight_decay", -1e-4),
        ("l1", -1.0),
        ("batch_size", 0),
        ("batch_size", 32.0),
        ("grad_clip", 0.0),
        ("grad_clip", -1.0),
        ("gamma", 0.0),
        ("gamma", 1.5),
        ("decay", 0.0),
        ("decay", 1.01),
        ("warmup", -1),
        ("step_size", 0),
        ("warmup_start_factor", 0.0),
        ("min_lr", -1.0),
        ("explode_factor", 1.0),
        ("lr", "0.1"),
        ("step_size", True),
    ],
)
def test_config_error_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        OptimConfig(**{field: value})
    message = str(err.value)
    assert message.startswith(f"optim.{field}: ")
    assert repr(value) in message
    assert "\n" not in message


def test_unknown_choice_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="adagrad.*sgd, momentum, nesterov, adam, adamw, rmsprop"):
        OptimConfig(optimizer="adagrad")


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="^optim: momentum must be > 0 for optimizer 'nesterov'"):
        OptimConfig(optimizer="nesterov", momentum=0.0)
    with pytest.raises(ConfigError, match="^optim: min_lr"):
        OptimConfig(schedule="cosine", lr=1e-3, min_lr=1e-2)
    OptimConfig(optimizer="sgd", momentum=0.0)
    OptimConfig(schedule="step", lr=1e-3, min_lr=1e-2)


def test_from_dict_round_trips_and_rejects_unknown_keys() -> None:
    cfg = OptimConfig(optimizer="nesterov", lr=0.01, schedule="cosine", grad_clip=None)
    assert OptimConfig.from_dict(cfg.to_dict()) == cfg
    assert OptimConfig.from_dict({}) == OptimConfig()
    with pytest.raises(ConfigError, match="^optim.learning_rate: unknown key; known: optimizer"):
        OptimConfig.from_dict({"lr": 0.1, "learning_rate": 0.1})
    with pytest.raises(ConfigError, match="^optim.lr: .*-0.1"):
        OptimConfig.from_dict({"lr": -0.1})


def test_describe() -> None:
    cfg = OptimConfig(optimizer="nesterov", lr=0.01, momentum=0.9, schedule="cosine")
    assert describe(cfg) == "nesterov lr=0.01 momentum=0.9, cosine, mini-batch 64"
    assert describe(OptimConfig()) == "adam lr=0.001, constant, mini-batch 64"
    busy = OptimConfig(
        optimizer="adamw",
        lr=3e-4,
        schedule="step",
        step_size=500,
        gamma=0.1,
        batch_mode="full",
        weight_decay=0.01,
        l1=1e-5,
        grad_clip=None,
    )
    assert describe(busy) == (
        "adamw lr=0.0003, step gamma=0.1 every 500, full-batch, wd=0.01 l1=1e-05 no clip"
    )
    labels = {describe(OptimConfig(optimizer=name)) for name in OPTIMIZERS}
    assert len(labels) == len(OPTIMIZERS)
