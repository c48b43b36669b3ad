"""Tests of optimlab.reference, the NumPy oracle: hand-computed steps and the calling contract.

Every expected value here is worked out by hand from the paper form, never by calling the
function under test in another way, so a wrong formula in the reference fails a test.
"""

import inspect
import math
import pathlib
import re

import numpy as np
import pytest

import optimlab
import optimlab.reference as reference
from optimlab.reference import REFERENCES

#: constructor arguments that choose how a step runs, not what it computes
EXECUTION = {"params", "engine", "foreach", "fused", "capturable", "differentiable"}
NAMES = sorted(REFERENCES)


def _class(name: str):
    return optimlab.get_optimizer_class(name)


#: references whose class has ``maximize`` (torch.optim.Muon, hence Muon, has none)
MAXIMIZING = [n for n in NAMES if "maximize" in inspect.signature(_class(n)).parameters]
#: references whose class takes complex parameters (as pairs of reals)
COMPLEX = [n for n in NAMES if _class(n).supports_complex]
#: references of matrices only: at least 2 dimensions
MATRIX_ONLY = {n for n in NAMES if getattr(_class(n), "matrix_only", False)}


def _class_defaults(name: str) -> dict:
    """The constructor defaults of the optimizer class registered under ``name``."""
    cls = optimlab.get_optimizer_class(name)
    parameters = inspect.signature(cls).parameters
    skip = EXECUTION | set(cls.precision_options)
    return {k: p.default for k, p in parameters.items() if k not in skip}


def keywords(name: str) -> set[str]:
    """What the reference must take: every hyperparameter of the class (torch's
    ``decoupled_weight_decay`` is ``weight_decay_mode``), and ``initial_lr``."""
    return (set(_class_defaults(name)) - {"decoupled_weight_decay"}) | {"initial_lr"}


def hyper(name, **overrides):
    """The class's defaults, as the reference's keywords, with ``overrides``."""
    defaults = _class_defaults(name)
    kwargs = {k: defaults[k] for k in keywords(name) - {"initial_lr"}} | overrides
    kwargs.setdefault("initial_lr", kwargs["lr"])  # no lr schedule unless a test sets one
    return kwargs


def sample(name):
    """A parameter and three gradients of a shape every reference accepts: 3 entries, or a
    2×3 matrix for the matrix-only ones."""
    theta = np.array([0.5, -1.0, 2.0])
    grads = [np.array([0.1, -0.2, 0.3]), np.array([-0.4, 0.1, 0.2]), np.array([0.3, 0.3, -0.1])]
    if name in MATRIX_ONLY:
        theta = np.stack([theta, theta[::-1] + 0.25])
        grads = [np.stack([g, 0.5 - g]) for g in grads]
    return theta, grads


def state_shape(name, key, shape):
    """The shape of state array ``key`` for a parameter of ``shape``: the parameter's own,
    except Adafactor's factored row and column statistics."""
    if key == "R":
        return shape[:-1] + (1,)
    if key == "C":
        return shape[:-2] + (1,) + shape[-1:]
    return shape


def run(name, theta0, grads, **overrides):
    """Apply ``name`` from ``theta0`` once per gradient in ``grads``; return (theta, state)."""
    theta, state = np.asarray(theta0, dtype=np.float64), {}
    for g in grads:
        theta = REFERENCES[name](
            theta, np.asarray(g, dtype=np.float64), state, **hyper(name, **overrides)
        )
    return theta, state


def close(actual, expected, rel=1e-12):
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=0)


# --- the package: names, keywords, no torch --------------------------------------------------


def test_registry_names_every_function_under_its_lower_case_name():
    assert set(REFERENCES) >= set(optimlab.available_optimizers())
    for name, fn in REFERENCES.items():
        assert fn is getattr(reference, name)
        assert name in reference.__all__


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_theta_grad_state_then_exactly_the_classs_hyperparameters(name):
    parameters = inspect.signature(REFERENCES[name]).parameters
    positional = [p for p in parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword_only = {p.name for p in parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert [p.name for p in positional] == ["theta", "grad", "state"]
    assert keyword_only == keywords(name)
    assert all(p.default is p.empty for p in parameters.values())


def test_package_source_imports_neither_torch_nor_optimlab():
    package_dir = pathlib.Path(reference.__file__).parent
    sources = sorted(package_dir.glob("*.py"))
    assert len(sources) >= 10
    forbidden = re.compile(r"^\s*(import|from)\s+(torch|optimlab)\b", re.MULTILINE)
    for source in sources:
        text = source.read_text(encoding="utf-8")
        assert not forbidden.search(text), f"{source.name} imports torch or optimlab"
        assert "__import__" not in text, source.name
        # only __init__ imports modules by name, and only its own: ``.<module>``
        calls = re.findall(r"import_module\(([^)]*)\)", text)
        assert source.name == "__init__.py" or not calls, source.name
        assert all(call.startswith('f".{') for call in calls), calls


# --- the calling contract ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_first_call_initialises_state_with_paper_symbols(name):
    """The state is the class's, under the paper's symbols: one array per state tensor the
    class keeps for such a parameter, plus the step count ``t`` and 0-d scalars."""
    import torch

    theta, (grad, *_) = sample(name)
    state = {}
    REFERENCES[name](theta, grad, state, **hyper(name))
    p = torch.zeros(theta.shape, requires_grad=True)
    opt = optimlab.create_optimizer(name, [p])
    kept = opt._state_keys(opt.param_groups[0], p)
    arrays = {k for k in state if k not in ("t", "mu_product")}
    assert len(arrays) == len(kept), (sorted(state), kept)
    for key in arrays:
        assert state[key].shape == state_shape(name, key, theta.shape), key
    if "t" in state:
        assert state["t"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_not_mutated_and_a_new_array_is_returned(name):
    theta, (grad, *_) = sample(name)
    theta_before, grad_before = theta.copy(), grad.copy()
    new = REFERENCES[name](theta, grad, {}, **hyper(name, weight_decay=0.1))
    assert new is not theta and not np.shares_memory(new, theta)
    np.testing.assert_array_equal(theta, theta_before)
    np.testing.assert_array_equal(grad, grad_before)


EDGE_SHAPES = [
    (name, shape)
    for name in NAMES
    for shape in ([(0, 3), (3, 0), (2, 0, 3)] if name in MATRIX_ONLY else [(), (0,), (2, 0, 3)])
]


@pytest.mark.parametrize(("name", "shape"), EDGE_SHAPES)
def test_zero_dim_and_zero_size_parameters(name, shape):
    theta = np.full(shape, 0.75)
    state = {}
    for _ in range(3):
        theta = REFERENCES[name](theta, np.full(shape, -0.5), state, **hyper(name))
    assert isinstance(theta, np.ndarray) and theta.shape == shape and theta.dtype == np.float64
    for key, value in state.items():
        if key not in ("t", "mu_product"):
            assert isinstance(value, np.ndarray), key
            assert value.shape == state_shape(name, key, shape), key
            assert np.all(np.isfinite(value)), key
    if shape == ():
        assert float(theta) > 0.75  # a negative gradient moves θ up


@pytest.mark.parametrize("name", MAXIMIZING)
def test_maximize_is_minimising_the_negated_gradient(name):
    theta0 = np.array([0.5, -1.0, 2.0])
    grads = [np.array([0.1, -0.2, 0.3]), np.array([-0.4, 0.1, 0.2]), np.array([0.3, 0.3, -0.1])]
    up, up_state = run(name, theta0, grads, maximize=True, weight_decay=0.05)
    down, down_state = run(name, theta0, [-g for g in grads], maximize=False, weight_decay=0.05)
    np.testing.assert_array_equal(up, down)
    assert up_state.keys() == down_state.keys()
    # and it really goes uphill: the first step moves θ along +g
    first = REFERENCES[name](theta0, grads[0], {}, **hyper(name, maximize=True))
    assert np.all(np.sign(first - theta0) == np.sign(grads[0]))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_weight_decay_mode_is_an_error_even_without_decay(name):
    theta, (grad, *_) = sample(name)
    kwargs = hyper(name, weight_decay=0.0, weight_decay_mode="L2")
    with pytest.raises(ValueError, match="weight_decay_mode"):
        REFERENCES[name](theta, grad, {}, **kwargs)


@pytest.mark.parametrize(
    ("name", "keyword", "value"),
    [
        ("sgd", "momentum_form", "nesterov"),
        ("adam", "amsgrad_form", "paper"),
        ("amsgrad", "amsgrad_form", "paper"),
        ("radam", "below_threshold", "adam"),
        ("adafactor", "eps1_mode", "paper"),
        ("muon", "momentum_form", "heavy_ball"),
        ("muon", "adjust_lr_fn", "spectral"),
    ],
)
def test_unknown_convention_is_an_error(name, keyword, value):
    theta, (grad, *_) = sample(name)
    state = {}
    with pytest.raises(ValueError, match=keyword):
        REFERENCES[name](theta, grad, state, **hyper(name, **{keyword: value}))
    assert state == {}


def run_complex(name, theta, grads):
    state = {}
    for g in grads:
        theta = REFERENCES[name](theta, g, state, **hyper(name))
    return theta, state


@pytest.mark.parametrize("name", COMPLEX)
def test_complex_parameters_are_pairs_of_reals(name):
    z = np.array([0.5 - 1.0j, 2.0 + 0.25j])
    grads = [np.array([0.1 + 0.3j, -0.2 - 0.1j]), np.array([-0.4 + 0.2j, 0.1 + 0.0j])]
    as_complex, _ = run_complex(name, z, grads)
    pairs, _ = run(
        name, np.stack([z.real, z.imag], -1), [np.stack([g.real, g.imag], -1) for g in grads]
    )
    assert np.iscomplexobj(as_complex)
    np.testing.assert_array_equal(as_complex.real, pairs[..., 0])
    np.testing.assert_array_equal(as_complex.imag, pairs[..., 1])


@pytest.mark.parametrize("name", sorted(set(NAMES) - set(COMPLEX)))
def test_complex_parameters_are_rejected_where_torch_rejects_them(name):
    # a (real, imag) axis would become one of the matrix dimensions Adafactor factors over and
    # Muon orthogonalises, so these take real parameters only, as torch.optim's do
    z = np.array([[0.5 - 1.0j, 2.0 + 0.25j], [1.0 + 0.0j, -0.5j]])
    state = {}
    with pytest.raises(TypeError, match="complex"):
        REFERENCES[name](z, z, state, **hyper(name))
    assert state == {}


# --- weight decay ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "lr", "initial_lr", "shrink"),
    [
        ("l2", 0.1, 0.1, 1 - 0.1 * 0.2),  # g = λθ, θ ← θ − lr·λθ
        ("decoupled", 0.1, 0.1, 1 - 0.1 * 0.2),  # θ ← θ − lr·λθ
        ("scheduled", 0.05, 0.1, 1 - 0.5 * 0.2),  # θ ← θ − (lr/initial_lr)·λθ
    ],
)
def test_weight_decay_modes_shrink_theta_in_closed_form_for_plain_sgd(mode, lr, initial_lr, shrink):
    theta = np.array([1.0, -3.0, 0.5])
    new = reference.sgd(
        theta,
        np.zeros(3),
        {},
        **hyper("sgd", lr=lr, initial_lr=initial_lr, weight_decay=0.2, weight_decay_mode=mode),
    )
    close(new, shrink * theta)


@pytest.mark.known_answer("adamw")
def test_decoupled_decay_bypasses_adam_moments_while_l2_goes_through_them():
    theta, lam, lr = np.array([1.0, -3.0, 0.5]), 0.2, 0.1
    decoupled_state = {}
    decoupled = reference.adam(
        theta,
        np.zeros(3),
        decoupled_state,
        **hyper("adam", lr=lr, weight_decay=lam, weight_decay_mode="decoupled"),
    )
    close(decoupled, (1 - lr * lam) * theta)  # zero gradient: the adaptive part is exactly 0
    np.testing.assert_array_equal(decoupled_state["m"], 0.0)
    scheduled = reference.adam(
        theta,
        np.zeros(3),
        {},
        **hyper("adam", lr=lr, initial_lr=0.4, weight_decay=lam, weight_decay_mode="scheduled"),
    )
    close(scheduled, (1 - 0.25 * lam) * theta)
    # L2 on Adam: the first step normalises λθ to ≈ lr·sign(θ), whatever λ is
    l2_state = {}
    l2 = reference.adam(
        theta, np.zeros(3), l2_state, **hyper("adam", lr=lr, weight_decay=lam, eps=0.0)
    )
    close(l2, theta - lr * np.sign(theta))
    close(l2_state["m"], 0.1 * lam * theta)


# --- SGD -----------------------------------------------------------------------------------------


@pytest.mark.known_answer("sgd")
def test_sgd_torch_momentum_first_buffer_is_the_undamped_gradient():
    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    lr, mu, tau = 0.1, 0.9, 0.3
    theta, state = run("sgd", [0.0, 0.0], [g1], lr=lr, momentum=mu, dampening=tau)
    close(theta, -lr * g1)
    close(state["b"], g1)
    theta, state = run("sgd", [0.0, 0.0], [g1, g2], lr=lr, momentum=mu, dampening=tau)
    b2 = mu * g1 + (1 - tau) * g2
    close(state["b"], b2)
    close(theta, -lr * g1 - lr * b2)


def test_sgd_torch_nesterov_direction():
    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    lr, mu = 0.1, 0.9
    theta, _ = run("sgd", [0.0, 0.0], [g1, g2], lr=lr, momentum=mu, nesterov=True)
    b1, b2 = g1, mu * g1 + g2
    close(theta, -lr * (g1 + mu * b1) - lr * (g2 + mu * b2))


@pytest.mark.parametrize("nesterov", [False, True])
def test_sutskever_equals_torch_momentum_while_lr_is_constant(nesterov):
    grads = [
        np.array([1.0, -2.0]),
        np.array([0.5, 0.5]),
        np.array([-1.0, 0.25]),
        np.array([2.0, 0.0]),
    ]
    kwargs = {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov}
    torch_form, _ = run("sgd", [1.0, 1.0], grads, momentum_form="torch", **kwargs)
    sutskever, state = run("sgd", [1.0, 1.0], grads, momentum_form="sutskever", **kwargs)
    close(sutskever, torch_form)
    assert set(state) == {"v"}
    _, plain_state = run("sgd", [1.0, 1.0], grads, momentum_form="sutskever", lr=0.1)
    assert plain_state == {}  # momentum 0 keeps no velocity in either form


def test_sutskever_and_torch_momentum_part_when_lr_changes():
    g1, g2 = np.array([1.0]), np.array([0.0])
    mu = 0.9
    results = {}
    for form in ("torch", "sutskever"):
        state, theta = {}, np.array([0.0])
        theta = reference.sgd(
            theta, g1, state, **hyper("sgd", lr=1.0, momentum=mu, momentum_form=form)
        )
        theta = reference.sgd(
            theta, g2, state, **hyper("sgd", lr=0.1, momentum=mu, momentum_form=form)
        )
        results[form] = theta
    # torch: the stored gradient is rescaled by the new lr: −1 − 0.1·0.9·1
    close(results["torch"], [-1.0 - 0.1 * mu])
    # Sutskever: the old velocity keeps the lr it was made with: −1 − 0.9·1
    close(results["sutskever"], [-1.0 - mu])


def test_sutskever_form_rejects_dampening():
    with pytest.raises(ValueError, match="dampening"):
        reference.sgd(
            np.ones(2),
            np.ones(2),
            {},
            **hyper("sgd", momentum=0.9, dampening=0.1, momentum_form="sutskever"),
        )


# --- Adagrad, RMSprop, Adadelta ----------------------------------------------------------------


@pytest.mark.known_answer("adagrad")
def test_adagrad_two_steps_by_hand_with_lr_decay_and_initial_accumulator():
    lr, decay, g0, eps = 0.5, 0.1, 0.25, 1e-10
    g1, g2 = np.array([2.0, -1.0]), np.array([1.0, 3.0])
    theta, state = run(
        "adagrad",
        [0.0, 0.0],
        [g1, g2],
        lr=lr,
        lr_decay=decay,
        initial_accumulator_value=g0,
        eps=eps,
    )
    G1 = g0 + g1**2
    G2 = G1 + g2**2
    expected = -lr * g1 / (np.sqrt(G1) + eps) - lr / (1 + decay) * g2 / (np.sqrt(G2) + eps)
    close(theta, expected)
    close(state["G"], G2)
    assert state["t"] == 2


def test_adagrad_accumulates_each_coordinate_separately():
    # a large gradient in one coordinate must not slow the other one down
    theta, _ = run("adagrad", [0.0, 0.0], [[1e6, 1.0]], lr=1.0, eps=0.0)
    close(theta, [-1.0, -1.0])


@pytest.mark.parametrize("eps_inside_sqrt", [False, True])
def test_rmsprop_first_step_by_hand(eps_inside_sqrt):
    lr, alpha, eps, g = 0.01, 0.9, 0.04, np.array([3.0, -0.5])
    theta, state = run(
        "rmsprop", [0.0, 0.0], [g], lr=lr, alpha=alpha, eps=eps, eps_inside_sqrt=eps_inside_sqrt
    )
    v = (1 - alpha) * g**2
    denom = np.sqrt(v + eps) if eps_inside_sqrt else np.sqrt(v) + eps
    close(theta, -lr * g / denom)
    close(state["v"], v)


@pytest.mark.known_answer("rmsprop")
def test_rmsprop_centered_with_momentum_two_steps_by_hand():
    lr, alpha, mu, eps = 0.01, 0.9, 0.5, 1e-8
    g1, g2 = np.array([3.0, -0.5]), np.array([1.0, 1.0])
    theta, state = run(
        "rmsprop", [0.0, 0.0], [g1, g2], lr=lr, alpha=alpha, eps=eps, momentum=mu, centered=True
    )
    v1, gbar1 = (1 - alpha) * g1**2, (1 - alpha) * g1
    b1 = g1 / (np.sqrt(v1 - gbar1**2) + eps)  # = g1/(√(α(1−α))·|g1| + eps)
    close(b1, np.sign(g1) / math.sqrt(alpha * (1 - alpha)), rel=1e-7)
    v2, gbar2 = alpha * v1 + (1 - alpha) * g2**2, alpha * gbar1 + (1 - alpha) * g2
    b2 = mu * b1 + g2 / (np.sqrt(v2 - gbar2**2) + eps)
    close(theta, -lr * b1 - lr * b2)
    close(state["g_bar"], gbar2)
    close(state["b"], b2)


@pytest.mark.known_answer("adadelta")
def test_adadelta_first_step_size():
    rho, eps, lr, g = 0.9, 1e-6, 1.0, np.array([1.0, -100.0, 1e-4])
    theta, state = run("adadelta", [0.0, 0.0, 0.0], [g], lr=lr, rho=rho, eps=eps)
    delta = math.sqrt(eps) / np.sqrt((1 - rho) * g**2 + eps) * g
    close(theta, -lr * delta)
    close(state["u"], (1 - rho) * delta**2)
    # large gradients all move by the same ≈ √(eps/(1 − ρ)), whatever their size
    close(abs(theta[:2]), math.sqrt(eps / (1 - rho)), rel=1e-3)


# --- Adam family -------------------------------------------------------------------------------


def test_adam_first_step_is_lr_times_sign_of_gradient():
    g = np.array([1e-3, -5.0, 300.0])
    theta, state = run("adam", [0.0, 0.0, 0.0], [g], lr=0.01, eps=1e-12)
    close(theta, -0.01 * np.sign(g), rel=1e-8)
    close(state["m"], 0.1 * g)
    close(state["v"], 0.001 * g**2)


@pytest.mark.known_answer("adam")
def test_adam_second_step_by_hand():
    lr, b1, b2, eps = 0.1, 0.8, 0.9, 1e-3
    g1, g2 = np.array([1.0, -2.0]), np.array([3.0, 0.5])
    theta, _ = run("adam", [0.0, 0.0], [g1, g2], lr=lr, betas=(b1, b2), eps=eps)
    step1 = lr * g1 / (np.abs(g1) + eps)
    m2, v2 = b1 * (1 - b1) * g1 + (1 - b1) * g2, b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
    step2 = lr * (m2 / (1 - b1**2)) / (np.sqrt(v2 / (1 - b2**2)) + eps)
    close(theta, -step1 - step2)


def test_adam_eps_inside_sqrt():
    g = np.array([1.0, -3.0])
    theta, _ = run("adam", [0.0, 0.0], [g], lr=0.1, eps=1.0, eps_inside_sqrt=True)
    close(theta, -0.1 * g / np.sqrt(g**2 + 1.0))


@pytest.mark.known_answer("amsgrad")
@pytest.mark.parametrize("name", ["adam", "amsgrad"])
def test_amsgrad_raw_and_corrected_forms_by_hand(name):
    lr, b1, b2 = 0.1, 0.5, 0.5
    g1, g2 = np.array([4.0]), np.array([0.0])
    overrides = {"lr": lr, "betas": (b1, b2), "eps": 0.0}
    if name == "adam":
        overrides["amsgrad"] = True
    m2 = b1 * (1 - b1) * g1
    v1 = (1 - b2) * g1**2  # the maximum: v2 = b2·v1 < v1
    raw, raw_state = run(name, [0.0], [g1, g2], amsgrad_form="raw", **overrides)
    close(raw_state["v_max"], v1)
    close(raw, -lr * np.sign(g1) - lr * (m2 / (1 - b1**2)) / np.sqrt(v1 / (1 - b2**2)))
    corrected, corrected_state = run(name, [0.0], [g1, g2], amsgrad_form="corrected", **overrides)
    close(corrected_state["v_max"], g1**2)  # v1/(1 − β2) is the bias-corrected g1²
    close(corrected, -lr * np.sign(g1) - lr * (m2 / (1 - b1**2)) / np.abs(g1))
    assert abs(corrected[0]) < abs(raw[0])  # the corrected maximum cannot shrink


def test_adamw_and_amsgrad_are_adam():
    grads = [np.array([0.1, -0.2]), np.array([0.3, 0.1]), np.array([-0.5, 0.4])]
    adam, _ = run("adam", [1.0, 2.0], grads, weight_decay=0.1, weight_decay_mode="decoupled")
    adamw, _ = run("adamw", [1.0, 2.0], grads, weight_decay=0.1, weight_decay_mode="decoupled")
    np.testing.assert_array_equal(adamw, adam)
    with_flag, _ = run("adam", [1.0, 2.0], grads, amsgrad=True)
    amsgrad, _ = run("amsgrad", [1.0, 2.0], grads)
    np.testing.assert_array_equal(amsgrad, with_flag)


@pytest.mark.known_answer("adamax")
def test_adamax_first_two_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.5, 1e-8
    g1, g2 = np.array([2.0, -1.0]), np.array([-0.5, 4.0])
    theta, state = run("adamax", [0.0, 0.0], [g1, g2], lr=lr, betas=(b1, b2), eps=eps)
    u1 = np.abs(g1) + eps
    u2 = np.maximum(b2 * u1, np.abs(g2) + eps)
    close(u2, [1.0 + b2 * eps, 4.0 + eps])
    m2 = b1 * (1 - b1) * g1 + (1 - b1) * g2
    close(theta, -lr * g1 / u1 - lr / (1 - b1**2) * m2 / u2)
    close(state["u"], u2)


@pytest.mark.known_answer("nadam")
def test_nadam_first_step_by_hand():
    lr, b1, b2, eps, psi = 0.01, 0.9, 0.999, 1e-8, 4e-3
    g = np.array([0.5, -2.0])
    theta, state = run("nadam", [0.0, 0.0], [g], lr=lr, betas=(b1, b2), eps=eps, momentum_decay=psi)
    mu1 = b1 * (1 - 0.5 * 0.96**psi)
    mu2 = b1 * (1 - 0.5 * 0.96 ** (2 * psi))
    denom = np.abs(g) + eps  # √(v/(1 − β2)) = |g|
    expected = -lr * g / denom - lr * mu2 / (1 - mu1 * mu2) * (1 - b1) * g / denom
    close(theta, expected)
    assert state["mu_product"] == pytest.approx(mu1, rel=1e-15)


@pytest.mark.known_answer("radam")
def test_radam_below_threshold_is_sgd_with_bias_corrected_momentum():
    lr, b1 = 0.1, 0.9
    grads = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]
    theta, _ = run("radam", [0.0, 0.0], grads, lr=lr)
    expected, m = np.zeros(2), np.zeros(2)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        expected = expected - lr * m / (1 - b1**t)
    close(theta, expected)


def test_radam_skip_leaves_theta_but_advances_the_moments():
    grads = [np.array([1.0, -2.0])] * 5
    theta, state = run("radam", [0.5, 0.5], grads, below_threshold="skip")
    np.testing.assert_array_equal(theta, [0.5, 0.5])
    close(state["m"], (1 - 0.9**5) * grads[0])
    assert state["t"] == 5
    moved, _ = run("radam", [0.5, 0.5], grads * 2, below_threshold="skip")
    assert np.all(moved != 0.5)  # ρ_6 > 5: the rectified step runs


@pytest.mark.parametrize(("threshold", "first_rectified_step"), [(5.0, 6), (4.0, 5)])
def test_radam_threshold_decides_the_first_rectified_step(threshold, first_rectified_step):
    g, lr, b2, eps = np.array([2.0]), 0.01, 0.999, 1e-8
    steps = first_rectified_step
    theta, _ = run(
        "radam", [0.0], [g] * steps, lr=lr, rectify_threshold=threshold, below_threshold="skip"
    )
    # a constant gradient makes m̂ = g and v = (1 − β2^t)·g², so the step is lr·r·g/(|g| + eps/√bc2)
    t = steps
    bc2 = 1 - b2**t
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2**t / bc2
    r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    close(theta, -lr * r * g * math.sqrt(bc2) / (np.sqrt(bc2) * np.abs(g) + eps))
    skipped, _ = run(
        "radam", [0.0], [g] * (steps - 1), rectify_threshold=threshold, below_threshold="skip"
    )
    np.testing.assert_array_equal(skipped, [0.0])


# --- AdaBound ------------------------------------------------------------------------------------


@pytest.mark.known_answer("adabound")
def test_adabound_clips_the_step_size_at_both_ends():
    lr, final_lr, gamma, b1 = 1e-3, 0.1, 1e-3, 0.9
    g = np.array([1e8, 1e-9, 0.5])
    theta, state = run(
        "adabound", [0.0, 0.0, 0.0], [g], lr=lr, final_lr=final_lr, gamma=gamma, eps=0.0
    )
    lower = final_lr * (1 - 1 / (gamma + 1))
    upper = final_lr * (1 + 1 / gamma)
    m = (1 - b1) * g
    # unclipped, the first step is Adam's lr·sign(g): step/denom = lr/((1 − β1)·|g|)
    close(theta[0], -lower * m[0])  # huge gradient: Adam's rate would be below the lower bound
    close(theta[1], -upper * m[1])  # tiny gradient: above the upper bound
    close(theta[2], -lr * np.sign(g[2]))  # in between: Adam's step
    assert state["t"] == 1


@pytest.mark.parametrize(("follow", "factor"), [(True, 0.5), (False, 1.0)])
def test_adabound_bounds_follow_the_lr_schedule_only_when_asked(follow, factor):
    final_lr, gamma, b1 = 0.1, 1e-3, 0.9
    g = np.array([1e8])
    theta, _ = run(
        "adabound",
        [0.0],
        [g],
        lr=0.5e-3,
        initial_lr=1e-3,
        final_lr=final_lr,
        gamma=gamma,
        bounds_follow_lr=follow,
    )
    lower = factor * final_lr * (1 - 1 / (gamma + 1))
    close(theta, -lower * (1 - b1) * g)


@pytest.mark.known_answer("amsbound")
def test_amsbound_uses_the_running_maximum_of_v():
    lr, b1, b2, gamma, final_lr = 0.1, 0.5, 0.5, 0.01, 0.1
    g1, g2 = np.array([4.0]), np.array([0.0])
    common = {"lr": lr, "betas": (b1, b2), "eps": 0.0, "gamma": gamma, "final_lr": final_lr}
    ams, state = run("amsbound", [0.0], [g1, g2], **common)
    plain, _ = run("adabound", [0.0], [g1, g2], **common)
    m2, v1, v2 = b1 * (1 - b1) * g1, (1 - b2) * g1**2, b2 * (1 - b2) * g1**2
    close(state["v_max"], v1)
    # wide bounds (γ small): both steps stay unclipped, so only the denominators differ
    eta1 = lr * math.sqrt(1 - b2) / (1 - b1) / np.sqrt(v1)
    step2 = lr * math.sqrt(1 - b2**2) / (1 - b1**2)
    lower2, upper2 = final_lr * (1 - 1 / (2 * gamma + 1)), final_lr * (1 + 1 / (2 * gamma))
    assert lower2 < step2 / np.sqrt(v1) < step2 / np.sqrt(v2) < upper2
    close(ams, -eta1 * (1 - b1) * g1 - step2 / np.sqrt(v1) * m2)
    close(plain, -eta1 * (1 - b1) * g1 - step2 / np.sqrt(v2) * m2)


# --- Lion, Adafactor, Muon: properties of the conventions --------------------------------------
# (their steps by hand and their parity with outside implementations: test_reference_outside.py)


def test_lion_l2_decay_goes_through_the_momentum_and_decoupled_does_not():
    theta, lam, lr = np.array([1.0, -3.0, 0.5]), 0.2, 0.1
    decoupled, decoupled_state = run(
        "lion", theta, [np.zeros(3)], lr=lr, weight_decay=lam, weight_decay_mode="decoupled"
    )
    close(decoupled, (1 - lr * lam) * theta)  # sign(c) = sign(0) = 0: only the decay moves θ
    np.testing.assert_array_equal(decoupled_state["m"], 0.0)
    l2, l2_state = run(
        "lion", theta, [np.zeros(3)], lr=lr, weight_decay=lam, weight_decay_mode="l2"
    )
    close(l2, theta - lr * np.sign(theta))  # g = λθ, so c = (1 − β1)·λθ and θ moves by lr·sign(θ)
    close(l2_state["m"], (1 - 0.99) * lam * theta)


def test_adafactor_factors_each_matrix_of_a_stack_on_its_own():
    # a 3-D parameter is factored over its last two axes, batched over the first: the same as
    # stepping each 2-D slice alone, except that the parameter scale and the clipping RMS are
    # taken over the whole tensor, so they are held equal here (no scale, no clipping: d large)
    rng = np.random.default_rng(0)
    theta0, grads = rng.normal(size=(2, 3, 4)), [rng.normal(size=(2, 3, 4)) for _ in range(4)]
    grads[2][1] *= 100.0  # one slice's statistics much larger than the other's
    options = {"relative_step": False, "scale_parameter": False, "d": 1e9}
    stacked, state = run("adafactor", theta0, grads, **options)
    for i in range(2):
        alone, alone_state = run("adafactor", theta0[i], [g[i] for g in grads], **options)
        close(stacked[i], alone)
        close(state["R"][i], alone_state["R"])
        close(state["C"][i], alone_state["C"])


def test_adafactor_unfactored_matrix_is_the_flat_vector_step():
    # factored=False keeps a full second moment v of θ's shape; every other part of the step is
    # elementwise or over the whole tensor, so it equals the step of the flattened parameter
    rng = np.random.default_rng(1)
    theta0, grads = rng.normal(size=(3, 4)), [rng.normal(size=(3, 4)) for _ in range(4)]
    matrix, state = run("adafactor", theta0, grads, factored=False, beta1=0.9)
    flat, _ = run("adafactor", theta0.ravel(), [g.ravel() for g in grads], beta1=0.9)
    close(matrix.ravel(), flat)
    assert set(state) == {"t", "v", "m"} and state["v"].shape == (3, 4)


def test_adafactor_factored_second_moment_is_exact_for_a_rank_one_gradient_square():
    # when g² = r·cᵀ is rank 1 (|g| an outer product) the factored V̂ = R·C/mean(R) is g² itself
    # on the first step, so U = sign(g) exactly, as Adam's (unfactored) first step would give
    r, c = np.array([1.0, 4.0, 0.25]), np.array([2.0, 0.5])
    g = np.sqrt(np.outer(r, c)) * np.array([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    theta, _ = run("adafactor", np.zeros((3, 2)), [g], relative_step=False, scale_parameter=False)
    close(theta, -1e-2 * np.sign(g))


def run_muon(theta0, grads, momenta, **overrides):
    theta, state = np.asarray(theta0, dtype=np.float64), {}
    for g, mu in zip(grads, momenta):
        theta = reference.muon(theta, g, state, **hyper("muon", momentum=mu, **overrides))
    return theta, state


@pytest.mark.parametrize("nesterov", [False, True])
def test_muon_momentum_forms_agree_while_momentum_is_constant_and_part_when_it_changes(nesterov):
    # the "ema" buffer is (1 − μ) times the "sum" buffer, and Newton–Schulz normalises its input
    rng = np.random.default_rng(2)
    theta0, grads = rng.normal(size=(4, 6)), [rng.normal(size=(4, 6)) for _ in range(5)]
    constant = [0.9] * 5
    ema, ema_state = run_muon(theta0, grads, constant, nesterov=nesterov, momentum_form="ema")
    total, sum_state = run_muon(theta0, grads, constant, nesterov=nesterov, momentum_form="sum")
    close(ema, total, rel=1e-12)
    close(ema_state["b"], (1 - 0.9) * sum_state["b"])
    warm_up = [0.5, 0.6, 0.7, 0.8, 0.9]  # a momentum warm-up, as in the modded-nanogpt runs
    ema, _ = run_muon(theta0, grads, warm_up, nesterov=nesterov, momentum_form="ema")
    total, _ = run_muon(theta0, grads, warm_up, nesterov=nesterov, momentum_form="sum")
    assert np.max(np.abs(ema - total)) > 1e-4


@pytest.mark.parametrize("adjust_lr_fn", ["original", "match_rms_adamw"])
def test_muon_orthogonalises_a_convolution_weight_as_its_out_by_rest_matrix(adjust_lr_fn):
    # a [out, in, kh, kw] weight is the [out, in·kh·kw] matrix, and the lr adjustment uses that
    # matrix's shape: here [3, 24], so "original" gives lr·√max(1, 3/24) = lr
    rng = np.random.default_rng(3)
    theta0, grads = rng.normal(size=(3, 2, 3, 4)), [rng.normal(size=(3, 2, 3, 4)) for _ in range(3)]
    momenta = [0.95] * 3
    conv, state = run_muon(theta0, grads, momenta, adjust_lr_fn=adjust_lr_fn)
    matrix, _ = run_muon(
        theta0.reshape(3, 24), [g.reshape(3, 24) for g in grads], momenta, adjust_lr_fn=adjust_lr_fn
    )
    close(conv.reshape(3, 24), matrix)
    assert state["b"].shape == (3, 2, 3, 4)


def test_muon_l2_decay_enters_the_buffer_and_decoupled_decay_uses_the_unadjusted_lr():
    theta0, lr, lam = np.arange(1.0, 7.0).reshape(3, 2), 0.1, 0.5
    zero = [np.zeros((3, 2))]
    # decoupled: zero gradient, so the buffer stays 0, Newton–Schulz gives 0 and only the decay
    # acts, with lr itself although the 3×2 shape adjusts the update's lr by √1.5
    decoupled, state = run_muon(theta0, zero, [0.9], lr=lr, weight_decay=lam)
    close(decoupled, (1 - lr * lam) * theta0)
    np.testing.assert_array_equal(state["b"], 0.0)
    scheduled, _ = run_muon(
        theta0, zero, [0.9], lr=lr, initial_lr=0.4, weight_decay=lam, weight_decay_mode="scheduled"
    )
    close(scheduled, (1 - 0.25 * lam) * theta0)
    _, l2_state = run_muon(theta0, zero, [0.9], lr=lr, weight_decay=lam, weight_decay_mode="l2")
    close(l2_state["b"], (1 - 0.9) * lam * theta0)


# --- the oracle agrees with torch.optim where the algorithm is the same --------------------------

TORCH_CASES = [
    ("sgd", "SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    ("sgd", "SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True}),
    (
        "adagrad",
        "Adagrad",
        {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01, "initial_accumulator_value": 0.1},
    ),
    (
        "rmsprop",
        "RMSprop",
        {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.01, "momentum": 0.5, "centered": True},
    ),
    ("adadelta", "Adadelta", {"lr": 1.0, "rho": 0.9, "weight_decay": 0.01}),
    ("adam", "Adam", {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 0.01, "amsgrad": True}),
    (
        "adamw",
        "AdamW",
        {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 0.1, "weight_decay_mode": "decoupled"},
    ),
    ("adamax", "Adamax", {"lr": 2e-3, "weight_decay": 0.01}),
    ("nadam", "NAdam", {"lr": 2e-3, "weight_decay": 0.01}),
    ("radam", "RAdam", {"lr": 1e-3, "weight_decay": 0.01}),
]


@pytest.fixture
def torch_float64():
    """torch with float64 as default dtype, restored afterwards.

    torch.optim keeps its scalar state (``step``, NAdam's ``mu_product``) in float64 only when
    that is the default dtype, float32 otherwise; a float32 product of momenta drifts by ~1e-9
    over 60 steps, which is torch's rounding, not a difference in the formula.
    """
    torch = pytest.importorskip("torch")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(previous)


@pytest.mark.parametrize(("name", "torch_name", "overrides"), TORCH_CASES)
def test_reference_matches_torch_optim_over_60_steps(name, torch_name, overrides, torch_float64):
    torch = torch_float64
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(3, 4))
    kwargs = hyper(name, **overrides)
    torch_kwargs = {k: v for k, v in overrides.items() if k != "weight_decay_mode"}
    param = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    optimizer = getattr(torch.optim, torch_name)([param], **torch_kwargs)
    state = {}
    for _ in range(60):
        g = rng.normal(size=theta.shape)
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        theta = REFERENCES[name](theta, g, state, **kwargs)
    close(param.detach().numpy(), theta, rel=1e-10)
