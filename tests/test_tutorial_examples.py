"""The tutorial examples (docs/tutorial-examples.md): the page's tables are what
docs/tutorial_examples.py computes now, and every run is checked independently of torch: by
closed forms where they exist and by the NumPy reference optimizers everywhere."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from optimlab.lab.problems import get_problem
from optimlab.lab.problems.tutorial import tutorial_least_squares, tutorial_regression_data
from optimlab.reference import REFERENCES

from docs_scripts import docs_script


@pytest.fixture(scope="module")
def script():
    with docs_script("tutorial_examples") as module:
        yield module


@pytest.fixture(scope="module")
def results(script):
    return script.run_all()


def _run(results, problem: str, label: str):
    (run,) = [r for r in results[problem] if r.setting.label == label]
    return run


def _regression_arrays() -> tuple[np.ndarray, np.ndarray]:
    data = tutorial_regression_data()
    return data["x_train"].numpy()[:, 0], data["y_train"].numpy()[:, 0]


# ---------------------------------------------------------------------------------------------
# The page.


def test_the_page_shows_what_the_script_computes(script, results):
    from pageblocks import page_blocks

    page = page_blocks(script.PAGE.read_text(encoding="utf-8"))
    fresh = script.tables(results)
    assert set(page) == set(fresh) == {"quadratic-table", "regression-table"}
    for name, body in fresh.items():
        assert page[name] == body, f"{name} is out of date: run python docs/tutorial_examples.py"


def test_the_page_links_both_figures(script):
    text = script.PAGE.read_text(encoding="utf-8")
    for name in ("tutorial-quadratic.png", "tutorial-regression.png"):
        assert f"(images/{name})" in text
        assert (script.IMAGES / name).stat().st_size > 10_000


def test_update_page_replaces_only_the_generated_blocks(script, tmp_path):
    from pageblocks import stale_blocks, update_page, write_blocks

    text = (
        "intro\n<!-- generated: a -->\nold\n<!-- end generated: a -->\nmiddle\n"
        "<!-- generated: b -->\nkept\n<!-- end generated: b -->\noutro\n"
    )
    assert update_page(text, {"a": "new\n"}) == text.replace("old", "new")
    with pytest.raises(ValueError, match="no generated block named c"):
        update_page(text, {"c": "x\n"})
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    assert stale_blocks(page, {"a": "old\n", "b": "other\n"}) == ["b"]
    write_blocks(page, {"b": "other\n"})
    assert page.read_text(encoding="utf-8") == text.replace("kept", "other")


def test_the_settings_are_the_tutorials(script, results):
    for problem, runs in results.items():
        tutorial = [r for r in runs if r.setting.label != "Adadelta, lr 1"]
        assert [r.setting.label for r in tutorial] == [
            "SGD", "Momentum", "RMSprop", "Adadelta", "Adagrad", "Adam", "AdamW"
        ]  # fmt: skip
        assert all(r.hparams["lr"] == 0.01 for r in tutorial)
        assert all(r.path.shape == (1001, 2) and r.losses.shape == (1000,) for r in runs)
        assert _run(results, problem, "Momentum").hparams["momentum"] == 0.9
        assert _run(results, problem, "AdamW").hparams["weight_decay"] == 0.01
        assert _run(results, problem, "Adadelta, lr 1").hparams["lr"] == 1.0


# ---------------------------------------------------------------------------------------------
# Independent checks of the numbers.


def test_sgd_on_the_quadratic_follows_its_closed_form(results):
    # ∇J = 2(θ − θ*), so θ_k − θ* = (1 − 2·lr)^k (θ₀ − θ*).
    run = _run(results, "tutorial_quadratic", "SGD")
    minimum, start = np.array([1.0, 2.0]), np.array([0.0, 0.0])
    k = np.arange(1001)[:, None]
    expected = minimum + (1 - 2 * 0.01) ** k * (start - minimum)
    np.testing.assert_allclose(run.path, expected, rtol=0, atol=1e-13)
    assert run.final["distance_to_minimum"] == pytest.approx(math.sqrt(5) * 0.98**1000, rel=1e-9)


def test_sgd_on_the_regression_follows_its_closed_form(results):
    # MSE(θ) = mean((w x + b − y)²) has Hessian H = (2/n)·AᵀA, A = [x 1], so gradient descent
    # gives θ_k − θ* = (I − lr·H)^k (θ₀ − θ*).
    x, _ = _regression_arrays()
    a = np.stack([x, np.ones_like(x)], axis=1)
    hessian = 2 * a.T @ a / len(x)
    w, b, _ = tutorial_least_squares()
    best = np.array([w, b])
    run = _run(results, "tutorial_regression", "SGD")
    step = np.eye(2) - 0.01 * hessian
    for k in (0, 1, 10, 100, 1000):
        expected = best + np.linalg.matrix_power(step, k) @ (run.path[0] - best)
        np.testing.assert_allclose(run.path[k], expected, rtol=0, atol=1e-12)


def test_least_squares_solution_is_the_textbook_formula():
    x, y = _regression_arrays()
    slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    intercept = y.mean() - slope * x.mean()
    w, b, mse = tutorial_least_squares()
    assert (w, b) == pytest.approx((slope, intercept), rel=1e-12)
    assert mse == pytest.approx(np.mean((slope * x + intercept - y) ** 2), rel=1e-12)
    # The problem's target sits 0.001 above the optimum (to the four digits it is written with).
    assert get_problem("tutorial_regression").target == pytest.approx(mse + 1e-3, abs=5e-5)


def _quadratic_grads(thetas):
    (theta,) = thetas
    return [2 * (theta - np.array([1.0, 2.0]))]


def _regression_grads(thetas):
    x, y = _regression_arrays()
    weight, bias = thetas
    residual = weight[0, 0] * x + bias[0] - y
    return [np.array([[2 * np.mean(residual * x)]]), np.array([2 * np.mean(residual)])]


@pytest.mark.parametrize("problem", ["tutorial_quadratic", "tutorial_regression"])
def test_every_run_matches_the_numpy_reference(results, problem):
    """The same 1000 steps by optimlab.reference (NumPy, the papers' formulas) on the
    analytic gradient: every iterate agrees."""
    grads = _quadratic_grads if problem == "tutorial_quadratic" else _regression_grads
    for run in results[problem]:
        ref = REFERENCES[run.setting.name]
        hyper = {k: v for k, v in run.hparams.items() if k in inspect.signature(ref).parameters}
        hyper.setdefault("initial_lr", hyper["lr"])  # no learning-rate schedule
        instance = get_problem(problem).make(0)
        thetas = [p.detach().numpy().astype(np.float64).copy() for p in instance.model.parameters()]
        states = [{} for _ in thetas]
        path = [np.concatenate([t.ravel() for t in thetas])]
        for _ in range(1000):
            thetas = [ref(t, g, s, **hyper) for t, g, s in zip(thetas, grads(thetas), states)]
            path.append(np.concatenate([t.ravel() for t in thetas]))
        np.testing.assert_allclose(
            run.path, np.array(path), rtol=1e-9, atol=1e-12, err_msg=run.setting.label
        )


def test_why_adagrad_and_adadelta_barely_move_at_lr_0_01(results):
    """The page's explanation, as bounds: Adagrad's k-th step on a coordinate whose gradient
    never grows is at most lr/√k, so 1000 steps move it at most lr·Σ 1/√k < 2·lr·√1000 ≈ 0.63;
    Adadelta's first step is at most lr·√(ε/(1 − ρ)) ≈ 3.2e-5."""
    for problem in ("tutorial_quadratic", "tutorial_regression"):
        adagrad = _run(results, problem, "Adagrad")
        moved = np.abs(adagrad.path[-1] - adagrad.path[0])
        assert (moved <= 0.01 * np.sum(1 / np.sqrt(np.arange(1, 1001)))).all()
        assert (moved < 2 * 0.01 * math.sqrt(1000)).all()
        adadelta = _run(results, problem, "Adadelta")
        first = np.abs(adadelta.path[1] - adadelta.path[0])
        assert (first <= 0.01 * math.sqrt(1e-6 / (1 - 0.9))).all()
        assert adadelta.steps_to_target is None and adagrad.steps_to_target is None
        # Adadelta as its paper defines it (lr 1) gets there within the same 1000 steps.
        assert _run(results, problem, "Adadelta, lr 1").steps_to_target is not None


def test_quadratic_problem_facts():
    problem = get_problem("tutorial_quadratic")
    instance = problem.make(0)
    assert problem.start == (0.0, 0.0) and problem.minima == ((1.0, 2.0),)
    assert instance.evaluate() == {"train_loss": 5.0, "distance_to_minimum": math.sqrt(5)}
    xy = torch.tensor([0.3, -0.7], dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(problem.function, xy)
    assert torch.equal(hessian, 2 * torch.eye(2, dtype=torch.float64))


def test_regression_data_is_drawn_as_documented():
    data = tutorial_regression_data()
    rng = np.random.RandomState(42)
    x = rng.standard_normal(200)
    y = 3 * x + 2 + rng.standard_normal(200)
    assert data["x_train"].dtype == torch.float64 and data["x_train"].shape == (100, 1)
    assert np.array_equal(data["x_train"].numpy()[:, 0], x[:100])
    assert np.array_equal(data["y_val"].numpy()[:, 0], y[100:])
    instance = get_problem("tutorial_regression").make(0)
    assert [p.dtype for p in instance.model.parameters()] == [torch.float64] * 2
