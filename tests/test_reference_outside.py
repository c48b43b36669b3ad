"""Known answers for the Lion, Adafactor and Muon references from outside optimlab.

The reference is the oracle the optimizer classes are held to, but it is not independent of
them: one person's reading of a paper can be wrong twice. So each reference is compared here,
over many steps and in float64 wherever the other side allows it, with implementations written
by others (``lion-pytorch``, ``optax`` through jax's x64 mode, ``torch.optim``), and with one or
two steps worked out by hand, independent of every library.

The outside packages come with the ``dev`` extra; where one is missing its tests are skipped
with the reason, and the hand-computed steps still run.
"""

import functools
import math

import numpy as np
import pytest

import optimlab.reference as reference

from test_reference import hyper

MISSING = "not installed; it comes with optimlab's dev extra: pip install -e '.[dev]'"


def close(actual, expected, rel=1e-12):
    """Max-norm relative agreement, so entries near 0 are judged on the array's own scale."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    error = float(np.max(np.abs(actual - expected), initial=0.0)) / scale
    assert error <= rel, f"relative error {error:.3e} > {rel:.1e}"


@pytest.fixture
def torch64():
    torch = pytest.importorskip("torch", reason=f"torch {MISSING}")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch.optim's scalar state follows it
    yield torch
    torch.set_default_dtype(previous)


@pytest.fixture
def optax64():
    """optax with jax's 64-bit mode on (jax computes in float32 otherwise), restored after."""
    jax = pytest.importorskip("jax", reason=f"jax {MISSING}")
    optax = pytest.importorskip("optax", reason=f"optax {MISSING}")
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield optax, jax
    jax.config.update("jax_enable_x64", previous)


def optax_stepper(optax, jax, tx):
    """``tx``'s update and apply as one compiled function of (g, state, params)."""

    def step(g, opt_state, params):
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return jax.jit(step)


def schedule(step, base, cos=math.cos):
    """A cosine-shaped lr schedule, so rules that read lr differently part ways (``cos`` lets
    jax trace it)."""
    return base * (0.55 + 0.45 * cos(0.1 * step))


# --- Lion ----------------------------------------------------------------------------------------
#
# Every coordinate moves by ±lr·sign(c) with c = β1·m + (1 − β1)·g, so two correct
# implementations agree to rounding only while no c is so close to 0 that rounding could flip
# its sign. The gradients are standard normal and the runs check, step by step, that every |c|
# stays above 1e-6 (rounding moves c by ~1e-17) and that the momentum overrides the gradient's
# own sign in at least 5% of the coordinates (14% with this seed), so that β1 and β2 both
# matter to the result.


LION_START = np.random.default_rng(0).normal(size=(3, 4))
LION_BASE_LR = 0.01


def lion_reference(steps, mode):
    """The reference run the outside ones are held to: a list of (g, lr, θ, m) per step."""
    rng = np.random.default_rng(1)
    theta, state, record = LION_START, {}, []
    momentum_decides = compared = 0
    kwargs = hyper(
        "lion",
        betas=(0.9, 0.99),
        weight_decay=0.05,
        weight_decay_mode=mode,
        initial_lr=LION_BASE_LR,
    )
    for step in range(steps):
        g = rng.normal(size=theta.shape)
        lr = schedule(step, LION_BASE_LR)
        if state:
            c = 0.9 * state["m"] + 0.1 * g
            assert np.min(np.abs(c)) > 1e-6, "a sign too close to 0 to compare: change the seed"
            momentum_decides += int(np.sum(np.sign(c) != np.sign(g)))
            compared += g.size
        theta = reference.lion(theta, g, state, **{**kwargs, "lr": lr})
        record.append((g, lr, theta, state["m"]))
    assert momentum_decides >= 0.05 * compared
    return record


def lion_pytorch_run(torch, cls, record, decoupled_weight_decay):
    """lion-pytorch over the gradients and lrs of ``record``; yields its (θ, exp_avg)."""
    param = torch.tensor(LION_START, requires_grad=True)
    optimizer = cls(
        [param],
        lr=LION_BASE_LR,
        betas=(0.9, 0.99),
        weight_decay=0.05,
        decoupled_weight_decay=decoupled_weight_decay,
    )
    for g, lr, *_ in record:
        optimizer.param_groups[0]["lr"] = lr
        param.grad = torch.tensor(g)
        optimizer.step()
        yield param.detach().numpy().copy(), optimizer.state[param]["exp_avg"].numpy().copy()


def lion_pytorch_classes():
    lion_pytorch = pytest.importorskip("lion_pytorch", reason=f"lion-pytorch {MISSING}")
    from lion_pytorch.foreach import Lion as ForeachLion

    return {"update_fn": lion_pytorch.Lion, "foreach": ForeachLion}


@pytest.mark.parametrize("variant", ["update_fn", "foreach"])
@pytest.mark.parametrize(
    ("decoupled_weight_decay", "mode"), [(False, "decoupled"), (True, "scheduled")]
)
def test_lion_matches_lion_pytorch_over_60_scheduled_steps(
    variant, decoupled_weight_decay, mode, torch64
):
    # lion-pytorch's decoupled_weight_decay=True divides λ by the constructor's lr, so its decay
    # is θ·(1 − (lr/initial_lr)·λ), our "scheduled"; False keeps θ·(1 − lr·λ), our "decoupled"
    record = lion_reference(60, mode)
    cls = lion_pytorch_classes()[variant]
    outside = list(lion_pytorch_run(torch64, cls, record, decoupled_weight_decay))
    assert len(outside) == 60
    for (_, _, theta, m), (param, exp_avg) in zip(record, outside):
        close(param, theta)
        close(exp_avg, m)


@pytest.mark.parametrize("engine", ["loop", "foreach", "fused"])
@pytest.mark.parametrize(
    ("decoupled_weight_decay", "mode"), [(False, "decoupled"), (True, "scheduled")]
)
def test_lion_class_matches_lion_pytorch_on_every_engine(
    engine, decoupled_weight_decay, mode, torch64
):
    # the class itself, not only its reference, against the outside implementation: the same
    # gradients and scheduled lrs, θ and the momentum compared at every step
    import optimlab

    record = lion_reference(60, mode)
    outside = lion_pytorch_run(
        torch64, lion_pytorch_classes()["update_fn"], record, decoupled_weight_decay
    )
    param = torch64.tensor(LION_START, requires_grad=True)
    ours = optimlab.Lion(
        [param],
        lr=LION_BASE_LR,
        betas=(0.9, 0.99),
        weight_decay=0.05,
        weight_decay_mode=mode,
        engine=engine,
    )
    for (g, lr, *_), (theta, m) in zip(record, outside):
        ours.param_groups[0]["lr"] = lr
        param.grad = torch64.tensor(g)
        ours.step()
        close(param.detach().numpy(), theta)
        close(ours.state[param]["exp_avg"].numpy(), m)


@pytest.mark.parametrize(
    ("decoupled_weight_decay", "wrong_mode"), [(False, "scheduled"), (True, "decoupled")]
)
def test_lion_pytorch_weight_decay_flag_does_not_match_the_other_mode(
    decoupled_weight_decay, wrong_mode, torch64
):
    # the mapping above is not an accident of small numbers: crossed over, the runs part
    record = lion_reference(20, wrong_mode)
    cls = lion_pytorch_classes()["update_fn"]
    *_, (param, _) = lion_pytorch_run(torch64, cls, record, decoupled_weight_decay)
    assert np.max(np.abs(param - record[-1][2])) > 1e-3


def test_lion_matches_optax_lion_over_60_scheduled_steps(optax64):
    # optax.lion = scale_by_lion → add_decayed_weights(λ) → scale_by_learning_rate: the paper's
    # θ ← θ − lr_t·(sign(c) + λθ), our "decoupled", with lr_t from a schedule of the step count
    optax, jax = optax64
    jnp = jax.numpy
    tx = optax.lion(
        learning_rate=lambda count: schedule(count, LION_BASE_LR, cos=jnp.cos),
        b1=0.9,
        b2=0.99,
        weight_decay=0.05,
    )
    params = jnp.asarray(LION_START)
    opt_state = tx.init(params)
    step = optax_stepper(optax, jax, tx)
    for g, _, theta, m in lion_reference(60, "decoupled"):
        params, opt_state = step(jnp.asarray(g), opt_state, params)
        assert params.dtype == jnp.float64
        close(np.asarray(params), theta)
        close(np.asarray(opt_state[0].mu), m)


@pytest.mark.known_answer("lion")
def test_lion_two_steps_by_hand():
    # lr = 0.1, β1 = 0.9, β2 = 0.99, λ = 0.5 decoupled: θ ← 0.95·θ − 0.1·sign(c)
    theta0 = np.array([1.0, -2.0, 0.5])
    g1 = np.array([3.0, -1.0, 0.0])
    g2 = np.array([-0.2, 0.05, 1.0])
    kwargs = hyper("lion", lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    state = {}
    # step 1: m = 0, c = 0.1·g1, sign(c) = [1, −1, 0] (sign(0) = 0 moves nothing)
    # θ1 = 0.95·[1, −2, 0.5] − 0.1·[1, −1, 0] = [0.85, −1.8, 0.475];  m1 = 0.01·g1
    theta1 = reference.lion(theta0, g1, state, **kwargs)
    close(theta1, [0.85, -1.8, 0.475])
    close(state["m"], [0.03, -0.01, 0.0])
    # step 2: c = 0.9·m1 + 0.1·g2 = [0.027 − 0.02, −0.009 + 0.005, 0 + 0.1] = [0.007, −0.004, 0.1]
    # the momentum overrules g2's sign in the first two coordinates: sign(c) = [1, −1, 1]
    # θ2 = 0.95·θ1 − 0.1·[1, −1, 1] = [0.8075 − 0.1, −1.71 + 0.1, 0.45125 − 0.1]
    # m2 = 0.99·m1 + 0.01·g2 = [0.0297 − 0.002, −0.0099 + 0.0005, 0.01]
    theta2 = reference.lion(theta1, g2, state, **kwargs)
    close(theta2, [0.7075, -1.61, 0.35125])
    close(state["m"], [0.0277, -0.0094, 0.01])


# --- Adafactor -----------------------------------------------------------------------------------


def adafactor_grads(rng, shape, step):
    """Gradients of varying size; for matrices, an all-zero first row over the first five steps,
    so that row's second moment is 0 and the ε1 clamp (or the ε1 addition) decides U there."""
    g = rng.normal(size=shape) * (1 + step % 3)
    if len(shape) >= 2 and step < 5:
        g[..., 0, :] = 0.0
    return g


TORCH_ADAFACTOR_CASES = [
    {},
    {"weight_decay": 0.1, "maximize": True},
    {"beta2_decay": -0.5, "d": 1.5, "eps": (1e-10, 1e-2)},
    {"lr": 0.5, "eps": (1e-20, 1e-3)},  # ρ_t = min(0.5, 1/√t) follows 1/√t from t = 5 on
]


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("overrides", TORCH_ADAFACTOR_CASES, ids=str)
def test_adafactor_matches_torch_optim_adafactor_over_60_steps(shape, overrides, torch64):
    # torch.optim.Adafactor is the torch form: relative step, parameter scale, no β1, ε1
    # clamped, factored over the last two dimensions of every ≥2-D tensor, decoupled decay with
    # λ scaled by lr; the lr follows a schedule, which also moves the cap of ρ_t = min(lr, 1/√t)
    torch = torch64
    rng = np.random.default_rng(1)
    theta = rng.normal(size=shape)
    param = torch.tensor(theta, requires_grad=True)
    optimizer = torch.optim.Adafactor([param], **overrides)
    kwargs = hyper("adafactor", **overrides)
    state = {}
    for step in range(60):
        g = adafactor_grads(rng, shape, step)
        lr = optimizer.param_groups[0]["lr"] = schedule(step, kwargs["initial_lr"])
        param.grad = torch.tensor(g)
        optimizer.step()
        theta = reference.adafactor(theta, g, state, **{**kwargs, "lr": lr})
        close(param.detach().numpy(), theta)
    torch_state = optimizer.state[param]
    assert float(torch_state["step"]) == state["t"] == 60
    names = {"R": "row_var", "C": "col_var"} if len(shape) >= 2 else {"v": "variance"}
    assert set(state) == {"t", *names}
    for key, torch_key in names.items():
        close(torch_state[torch_key].numpy(), state[key])


# optax.adafactor has no relative step size of its own (its learning_rate may be a schedule of
# the step count, which expresses ours), adds ε to g² like the paper ("add"), factors only when
# the second-largest dimension is ≥ min_dim_size_to_factor (default 128; 1 here), and then
# factors the two LARGEST dimensions, which are the last two only if the shape is so ordered:
# (2, 4, 5) is, (6, 2, 5) would not be. Its weight decay is θ ← θ − λ_optax·θ, not scaled by
# the learning rate, so λ_optax = lr·λ for our "decoupled" at a constant lr.
OPTAX_CASES = [
    {"relative_step": False, "scale_parameter": True, "beta1": None},
    {"relative_step": False, "scale_parameter": False, "beta1": 0.9},
    {"relative_step": True, "scale_parameter": True, "beta1": 0.9, "weight_decay": 0.2},
    {"relative_step": False, "scale_parameter": True, "beta1": None, "d": 1.5, "factored": False},
]


def run_optax_adafactor(optax, jax, shape, overrides, steps):
    """Reference and optax.adafactor side by side; yields (optax θ, reference θ) per step."""
    jnp = jax.numpy
    kwargs = hyper("adafactor", eps=(1e-30, 1e-3), eps1_mode="add", **overrides)
    lr = kwargs["lr"] = 0.05 if kwargs["relative_step"] else 0.01
    kwargs["initial_lr"] = lr
    learning_rate = lr
    if kwargs["relative_step"]:  # ρ_t = min(lr, 1/√t), t = count + 1

        def learning_rate(count):
            return jnp.minimum(lr, (count + 1.0) ** -0.5)

    tx = optax.adafactor(
        learning_rate=learning_rate,
        min_dim_size_to_factor=1,
        decay_rate=-kwargs["beta2_decay"],
        decay_offset=0,
        multiply_by_parameter_scale=kwargs["scale_parameter"],
        clipping_threshold=kwargs["d"],
        momentum=kwargs["beta1"],
        dtype_momentum=jnp.float64,
        weight_decay_rate=lr * kwargs["weight_decay"] if kwargs["weight_decay"] else None,
        eps=kwargs["eps"][0],
        factored=kwargs["factored"],
    )
    rng = np.random.default_rng(2)
    theta = rng.normal(size=shape)
    params = jnp.asarray(theta)
    opt_state, state = tx.init(params), {}
    optax_step = optax_stepper(optax, jax, tx)
    for step in range(steps):
        g = adafactor_grads(rng, shape, step)
        params, opt_state = optax_step(jnp.asarray(g), opt_state, params)
        theta = reference.adafactor(theta, g, state, **kwargs)
        yield np.asarray(params), theta


@pytest.fixture
def optax_float64_decay(optax64, monkeypatch):
    """optax.adafactor with its second-moment decay 1 − (t)^−c computed in float64.

    optax computes that rate from a float32 step count even in x64 mode (``_decay_rate_pow``
    casts to float32), which alone moves the result by ~1e-9; with the same rate in float64
    every other part of optax's chain can be compared to rounding.
    """
    optax, jax = optax64
    jnp = jax.numpy
    factorized = pytest.importorskip("optax._src.factorized")

    def decay_rate_float64(step, exponent=0.8):
        return 1.0 - (jnp.asarray(step, jnp.float64) + 1.0) ** (-exponent)

    monkeypatch.setattr(
        factorized,
        "scale_by_factored_rms",
        functools.partial(factorized.scale_by_factored_rms, decay_rate_fn=decay_rate_float64),
    )
    return optax, jax


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 4, 5)], ids=str)
@pytest.mark.parametrize("overrides", OPTAX_CASES, ids=str)
def test_adafactor_paper_form_matches_optax_adafactor_over_40_steps(
    shape, overrides, optax_float64_decay
):
    optax, jax = optax_float64_decay
    for params, theta in run_optax_adafactor(optax, jax, shape, overrides, 40):
        close(params, theta)


def test_adafactor_paper_form_matches_optax_as_shipped_to_its_float32_decay_rate(optax64):
    # unpatched, optax's float32 decay rate 1 − t^−0.8 is off by up to 2^−24 ≈ 6e-8 relative;
    # that moves V̂ and so U by ~3e-8 relative per step, and θ, whose 40 steps of α·Û add up to
    # ~0.4 against |θ| ~ 1, by at most ~40·0.01·3e-8 ≈ 1e-8 (measured: 2e-9)
    optax, jax = optax64
    for params, theta in run_optax_adafactor(optax, jax, (3, 4), OPTAX_CASES[1], 40):
        close(params, theta, rel=1e-8)


def adafactor_by_hand(g, theta0, **overrides):
    state = {}
    return reference.adafactor(theta0, g, state, **hyper("adafactor", **overrides)), state


@pytest.mark.known_answer("adafactor")
def test_adafactor_first_factored_step_by_hand_with_clipping():
    # torch form, defaults; t = 1, so 1 − β̂2 = 1^−0.8 = 1 and the statistics are the means:
    theta0 = np.array([[0.5, -1.0], [2.0, 1.0]])
    g = np.array([[1.0, 1.0], [1.0, 10.0]])
    # R = row means of g² = [1, 50.5],  C = column means = [1, 50.5],  mean(R) = 25.75
    # V̂_ij = R_i·C_j/25.75, so U_ij = g_ij·√(25.75/(R_i·C_j)):
    u = np.array(
        [
            [math.sqrt(25.75), math.sqrt(25.75 / 50.5)],
            [math.sqrt(25.75 / 50.5), 10 * math.sqrt(25.75 / 2550.25)],
        ]
    )
    # RMS(U)² = (25.75 + 2·25.75/50.5 + 100·25.75/2550.25)/4 = 27.7795.../4 > 1: clipped
    rms_u = math.sqrt((25.75 + 2 * 25.75 / 50.5 + 100 * 25.75 / 2550.25) / 4)
    assert rms_u == pytest.approx(2.6353, abs=1e-4)
    # α = max(ε2, RMS(θ0))·min(lr, 1/√1) = √(6.25/4)·0.01 = 1.25·0.01
    theta1, state = adafactor_by_hand(g, theta0)
    close(theta1, theta0 - 0.0125 * u / rms_u)
    close(state["R"], [[1.0], [50.5]])
    close(state["C"], [[1.0, 50.5]])
    # with β1 = 0.9 the first step is a tenth of it: m = (1 − β1)·α·Û
    with_momentum, state = adafactor_by_hand(g, theta0, beta1=0.9)
    close(with_momentum, theta0 - 0.1 * 0.0125 * u / rms_u)
    close(state["m"], 0.1 * 0.0125 * u / rms_u)


@pytest.mark.parametrize(
    ("eps1_mode", "u"),
    [
        # clamp: v = g² = [0.01, 4], V̂ = max(v, ε1²) = [0.25, 4], U = g/√V̂ = [0.2, −1]
        ("clamp", [0.1 / 0.5, -1.0]),
        # add: v = g² + ε1 = [0.51, 4.5], U = g/√v = [0.1/√0.51, −2/√4.5]
        ("add", [0.1 / math.sqrt(0.51), -2 / math.sqrt(4.5)]),
    ],
)
def test_adafactor_eps1_placement_by_hand(eps1_mode, u):
    # a vector (unfactored), ε1 = 0.5 so its place shows; plain step size lr = 0.1:
    # α = ρ = lr, RMS(U) < 1 in both forms, so no clipping: θ1 = θ0 − 0.1·U
    theta0, g = np.array([1.0, 1.0]), np.array([0.1, -2.0])
    theta1, state = adafactor_by_hand(
        g,
        theta0,
        lr=0.1,
        relative_step=False,
        scale_parameter=False,
        eps=(0.5, 1e-3),
        eps1_mode=eps1_mode,
    )
    assert math.sqrt(np.mean(np.square(u))) < 1
    close(theta1, theta0 - 0.1 * np.array(u))
    close(state["v"], [0.51, 4.5] if eps1_mode == "add" else [0.01, 4.0])


# --- Muon ----------------------------------------------------------------------------------------

COEFFICIENTS = (3.4445, -4.775, 2.0315)


def quintic(sigma, coefficients, steps):
    a, b, c = coefficients
    for _ in range(steps):
        sigma = a * sigma + b * sigma**3 + c * sigma**5
    return sigma


def orthonormal(rng, n):
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize(("rows", "cols"), [(4, 6), (6, 4), (5, 5)])
@pytest.mark.parametrize("steps", [0, 1, 5])
def test_newton_schulz_acts_on_singular_values_by_the_quintic(rows, cols, steps):
    # G = U·diag(s)·Vᵀ with orthonormal U, V; after X = G/‖G‖_F each iteration maps every
    # singular value σ to a·σ + b·σ³ + c·σ⁵ and keeps U and V. One singular value is 0, which
    # must stay 0; the tall case runs through the transposed branch.
    rng = np.random.default_rng(3)
    k = min(rows, cols)
    s = np.array([3.0, 1.0, 0.2, 0.01, 0.0])[:k]
    left, right = orthonormal(rng, rows)[:, :k], orthonormal(rng, cols)[:, :k]
    G = left @ np.diag(s) @ right.T
    sigma = quintic(s / np.linalg.norm(s), COEFFICIENTS, steps)
    out = reference.newton_schulz(G, ns_coefficients=COEFFICIENTS, ns_steps=steps, eps=1e-7)
    close(out, left @ np.diag(sigma) @ right.T, rel=1e-11)


def test_newton_schulz_cubic_converges_to_the_polar_factor():
    # with (a, b, c) = (1.5, −0.5, 0), the classical cubic Newton–Schulz iteration, every
    # singular value in (0, √3) converges to 1, so the result is U·Vᵀ of NumPy's own SVD
    G = np.random.default_rng(4).normal(size=(5, 8))
    u, _, vt = np.linalg.svd(G, full_matrices=False)
    out = reference.newton_schulz(G, ns_coefficients=(1.5, -0.5, 0.0), ns_steps=60, eps=1e-7)
    close(out, u @ vt, rel=1e-12)


@pytest.mark.parametrize(
    ("entry", "normalised"),
    [
        (0.0, 0.0),  # 0/max(0, eps) = 0: a zero update stays zero
        (1e-8, 1.0),  # above eps, normalised to norm 1 (1e-8/(1e-8 + 1e-9) ≈ 0.91 with an offset)
        (1e-10, 0.1),  # below eps, divided by eps itself
    ],
)
def test_newton_schulz_eps_is_a_floor_on_the_norm_as_in_torch(entry, normalised):
    # torch divides by max(‖X‖_F, eps); KellerJordan/Muon and Moonshot by ‖X‖_F + eps. With
    # (a, b, c) = (1, 0, 0) the iteration is the identity, so the normalisation shows alone.
    out = reference.newton_schulz(
        np.array([[entry, 0.0]]), ns_coefficients=(1.0, 0.0, 0.0), ns_steps=1, eps=1e-9
    )
    close(out, [[normalised, 0.0]])


@pytest.mark.known_answer("muon")
@pytest.mark.parametrize(
    ("shape", "adjust_lr_fn", "lr_adj"),
    [
        ((2, 3), None, 0.1),  # √max(1, 2/3) = 1
        ((2, 3), "match_rms_adamw", 0.1 * 0.2 * math.sqrt(3)),
        ((3, 2), "original", 0.1 * math.sqrt(1.5)),  # √max(1, 3/2)
    ],
)
def test_muon_first_step_by_hand(shape, adjust_lr_fn, lr_adj):
    # G has singular values 3 and 4 (a scaled partial identity), so ‖G‖_F = 5 and the
    # normalised singular values are 0.6 and 0.8. One Newton–Schulz step (a, b, c) gives
    #   p(0.6) = 3.4445·0.6 − 4.775·0.216 + 2.0315·0.07776 = 2.0667 − 1.0314 + 0.15796944
    #          = 1.19326944
    #   p(0.8) = 3.4445·0.8 − 4.775·0.512 + 2.0315·0.32768 = 2.7556 − 2.4448 + 0.66568192
    #          = 0.97648192
    # Nesterov EMA momentum, μ = 0.9: b = 0.1·G, u = 0.1·G + 0.9·b = 0.19·G, the same
    # direction. Decay λ = 0.5 with the unadjusted lr 0.1: θ1 = 0.95·θ0 − lr_adj·O.
    G = np.zeros((2, 3))
    G[0, 0], G[1, 1] = 3.0, 4.0
    O = np.zeros((2, 3))
    O[0, 0], O[1, 1] = 1.19326944, 0.97648192
    theta0 = np.arange(1.0, 7.0).reshape(2, 3)
    if shape == (3, 2):
        G, O, theta0 = G.T, O.T, theta0.T
    state = {}
    theta1 = reference.muon(
        theta0,
        G,
        state,
        **hyper(
            "muon",
            lr=0.1,
            weight_decay=0.5,
            momentum=0.9,
            ns_steps=1,
            adjust_lr_fn=adjust_lr_fn,
        ),
    )
    close(theta1, 0.95 * theta0 - lr_adj * O)
    close(state["b"], 0.1 * G)


MUON_CASES = [
    {"adjust_lr_fn": None},
    {"adjust_lr_fn": "match_rms_adamw"},
    {"adjust_lr_fn": "original", "nesterov": False, "weight_decay": 0.0},
    {"adjust_lr_fn": "match_rms_adamw", "nesterov": False, "momentum": 0.8},
]
MUON_SHAPES = [(8, 16), (16, 8), (12, 12)]


def muon_pair(torch, shape, overrides, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=shape)
    param = torch.tensor(theta, requires_grad=True)
    torch_kwargs = {"lr": 0.02, **overrides}
    optimizer = torch.optim.Muon([param], **torch_kwargs)
    kwargs = hyper("muon", **torch_kwargs)
    return rng, theta, param, optimizer, kwargs


@pytest.mark.parametrize("shape", MUON_SHAPES, ids=str)
@pytest.mark.parametrize("overrides", MUON_CASES, ids=str)
def test_muon_matches_torch_optim_muon_with_float64_newton_schulz(
    shape, overrides, torch64, monkeypatch
):
    # torch.optim.Muon always casts to bfloat16 for Newton–Schulz. With that one function
    # replaced by the reference's float64 one (checked on its own above), torch's momentum,
    # Nesterov mix, lr adjustment and weight decay must agree with the reference to rounding.
    torch = torch64
    from torch.optim import _muon

    def float64_newton_schulz(grad, ns_coefficients, ns_steps, eps):
        out = reference.newton_schulz(
            grad.numpy(), ns_coefficients=ns_coefficients, ns_steps=ns_steps, eps=eps
        )
        return torch.from_numpy(out)

    monkeypatch.setattr(_muon, "_zeropower_via_newtonschulz", float64_newton_schulz)
    rng, theta, param, optimizer, kwargs = muon_pair(torch, shape, overrides, seed=5)
    state = {}
    for _ in range(30):
        g = rng.normal(size=shape)
        param.grad = torch.tensor(g)
        optimizer.step()
        theta = reference.muon(theta, g, state, **kwargs)
        close(param.detach().numpy(), theta)
        close(optimizer.state[param]["momentum_buffer"].numpy(), state["b"])


# bfloat16 keeps 8 significant bits: each rounding is off by up to u = 2^−8 ≈ 3.9e-3
# relative. torch's Newton–Schulz rounds its input once and then A, B and X in each of its 5
# iterations, 16 roundings: ~16·u = 6.3e-2 if they all added up in a well-conditioned matrix.
# Measured here, the orthogonalised update O differs from the float64 one by 1e-2 to 5.4e-2 in
# relative Frobenius norm; the largest on a square matrix whose smallest singular value is 1/700
# of its largest, a direction in which the quintic's slope (a ≈ 3.44 near 0, on each of the 5
# steps) magnifies the rounding. The tolerance, 0.1, leaves twice that room and still separates:
# from the second step on, the update of the other Nesterov setting is more than 0.29 away.
BF16_UPDATE_TOLERANCE = 0.1


@pytest.mark.parametrize("shape", MUON_SHAPES, ids=str)
@pytest.mark.parametrize("overrides", MUON_CASES, ids=str)
def test_muon_matches_torch_optim_muon_in_bfloat16_to_the_rounding_it_implies(
    shape, overrides, torch64
):
    torch = torch64
    rng, theta, param, optimizer, kwargs = muon_pair(torch, shape, overrides, seed=6)
    state = {}
    rows, cols = shape
    if kwargs["adjust_lr_fn"] == "match_rms_adamw":
        lr_adj = kwargs["lr"] * 0.2 * math.sqrt(max(rows, cols))
    else:
        lr_adj = kwargs["lr"] * math.sqrt(max(1, rows / cols))
    decay = 1 - kwargs["lr"] * kwargs["weight_decay"]
    mu = kwargs["momentum"]
    drift = 0.0
    for step in range(20):
        g = rng.normal(size=shape)
        before = param.detach().numpy().copy()
        param.grad = torch.tensor(g)
        optimizer.step()
        theta = reference.muon(theta, g, state, **kwargs)
        # the buffers never pass through bfloat16: exact to rounding
        close(optimizer.state[param]["momentum_buffer"].numpy(), state["b"])
        # torch's O, read off its own step from the same θ, against the float64 one
        torch_update = (decay * before - param.detach().numpy()) / lr_adj
        nesterov_u = (1 - mu) * g + mu * state["b"]
        u, other_u = (nesterov_u, state["b"]) if kwargs["nesterov"] else (state["b"], nesterov_u)
        exact, other = (
            reference.newton_schulz(v, ns_coefficients=COEFFICIENTS, ns_steps=5, eps=kwargs["eps"])
            for v in (u, other_u)
        )
        error = np.linalg.norm(torch_update - exact) / np.linalg.norm(exact)
        assert error <= BF16_UPDATE_TOLERANCE
        if step > 0:  # on the first step both directions are multiples of g
            assert np.linalg.norm(torch_update - other) / np.linalg.norm(other) > 0.25
        drift = decay * drift + lr_adj * error * np.linalg.norm(exact)
    # the whole trajectories stay as close as those per-step differences allow
    assert np.linalg.norm(param.detach().numpy() - theta) <= drift + 1e-12
