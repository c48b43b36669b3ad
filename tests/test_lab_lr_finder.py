"""The learning-rate range test: restores everything, and suggests a learning rate that the
theory says is good."""

import math

import pytest
import torch

import optimlab
from optimlab.lab.lr_finder import SUGGESTIONS, lr_find
from optimlab.lab.problems import load_problem


def _linear_regression_two_over_L():
    """2/L for the MSE of linear_regression: L is the top eigenvalue of 2 XᵀX / n (with the
    bias as a column of ones). SGD on the full batch is stable for lr < 2/L."""
    from optimlab.lab.problems.regression import linear_regression_data

    data = linear_regression_data()
    x = data["x_train"].double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    top = torch.linalg.eigvalsh(2 * x.T @ x / len(x)).max().item()
    return 2.0 / top


def test_restores_model_optimizer_and_rng():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    model.eval()
    opt = optimlab.create_optimizer("adam", model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    # A few real steps first, so that there is optimizer state to restore.
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    params = [p.detach().clone() for p in model.parameters()]
    state = {k: v.clone() for s in opt.state.values() for k, v in s.items()}
    lrs = [g["lr"] for g in opt.param_groups]
    rng = torch.get_rng_state()

    result = lr_find(
        model, opt, lambda: torch.nn.functional.mse_loss(model(x), y), steps=40, end_lr=1e3
    )

    assert result.lrs and len(result.lrs) == len(result.smoothed)
    for before, after in zip(params, model.parameters(), strict=True):
        assert torch.equal(before, after)
    after_state = {k: v for s in opt.state.values() for k, v in s.items()}
    assert state.keys() == after_state.keys()
    for key, value in state.items():
        assert torch.equal(value, after_state[key]), key
    assert [g["lr"] for g in opt.param_groups] == lrs
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training  # mode restored too


def test_works_with_a_plain_torch_optimizer_and_stops_on_divergence():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([3.0]))
    module = torch.nn.Module()
    module.w = w
    opt = torch.optim.SGD([w], lr=0.1)
    result = lr_find(module, opt, lambda step: (w**2).sum(), start_lr=1e-4, end_lr=100, steps=100)
    # f = w², so SGD diverges for lr > 1: the sweep must stop there, before reaching 100.
    assert result.stopped_early
    assert result.lrs[-1] < 10
    assert result.suggestion is not None and result.suggestion < 1.0


def _sgd_range_test(problem_name: str, rule: str):
    """An SGD range test from 1e-5 to 10 over 100 steps on a bundled problem (seed 0)."""
    instance = load_problem(problem_name).make(0)
    opt = optimlab.create_optimizer("sgd", instance.model.parameters(), lr=1e-3)
    return lr_find(
        instance.model, opt, instance.train_loss, start_lr=1e-5, end_lr=10, steps=100, suggest=rule
    )


@pytest.mark.parametrize("rule", SUGGESTIONS)
def test_ill_conditioned_quadratic_suggestion_is_stable(rule):
    """f = ½(u² + 100 v²): gradient descent converges iff lr < 2/λ_max = 0.02."""
    result = _sgd_range_test("ill_conditioned", rule)
    assert result.method == rule
    assert 0.02 / 100 < result.suggestion < 0.02, result.reason


@pytest.mark.parametrize("rule", SUGGESTIONS)
def test_linear_regression_suggestion_is_in_the_stable_range(rule):
    two_over_l = _linear_regression_two_over_L()
    result = _sgd_range_test("linear_regression", rule)
    assert two_over_l / 1000 < result.suggestion < two_over_l, (result.suggestion, two_over_l)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_lr": 1.0, "end_lr": 0.1},
        {"steps": 2},
        {"smoothing": 1.0},
        {"diverge": 1.0},
        {"suggest": "best"},
    ],
)
def test_bad_arguments(kwargs):
    w = torch.nn.Parameter(torch.ones(1))
    module = torch.nn.Module()
    module.w = w
    with pytest.raises(ValueError, match="Invalid"):
        lr_find(module, torch.optim.SGD([w], lr=0.1), lambda: w.sum(), **kwargs)


def test_too_short_a_curve_gives_no_suggestion_with_a_reason():
    w = torch.nn.Parameter(torch.ones(1))
    module = torch.nn.Module()
    module.w = w
    # Diverges at once: lr 1e3 on w².
    result = lr_find(
        module, torch.optim.SGD([w], lr=1), lambda: (w**2).sum(), start_lr=1e3, end_lr=1e6, steps=20
    )
    assert result.suggestion is None
    assert "lower start_lr" in result.reason
    assert all(math.isfinite(v) for v in result.losses)
