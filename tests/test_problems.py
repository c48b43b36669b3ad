"""Tests of the lab's problems: the contract every problem keeps, the facts of each one, the
IDX reader, the Fashion-MNIST fallback and loading a user's own problem."""

from __future__ import annotations

import gzip
import math
import pickle
import random
import struct
import sys
import textwrap

import numpy as np
import pytest
import torch

from optimlab.lab.problems import (
    Function2DProblem,
    Instance,
    Problem,
    ProblemUnavailable,
    available_problems,
    get_problem,
    load_problem,
    read_idx,
    register_problem,
    write_idx,
)
from optimlab.lab.problems import images as images_module
from optimlab.lab.problems.base import EpochSampler
from optimlab.lab.problems.quadratic_deep import (
    deepobs_hessian,
    quadratic_data,
    random_rotation,
)

BUILTIN = [
    "rosenbrock",
    "rastrigin",
    "beale",
    "himmelblau",
    "ill_conditioned",
    "saddle",
    "tutorial_quadratic",
    "linear_regression",
    "logistic_regression",
    "tutorial_regression",
    "quadratic_deep",
    "digits_mlp",
    "digits_cnn",
    "fmnist_mlp",
    "fmnist_2c2d",
    "mnist1d_mlp",
    "mnist1d_cnn",
    "char_transformer",
]
TWO_D = [n for n in BUILTIN if get_problem(n).kind == "function2d"]
NOT_2D = [n for n in BUILTIN if n not in TWO_D]


# ---------------------------------------------------------------------------------------------
# A tiny stand-in for Fashion-MNIST, written with struct (independently of write_idx).


def _idx_bytes(array: np.ndarray) -> bytes:
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


@pytest.fixture(scope="session")
def fake_fmnist_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 100)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = directory / f"{prefix}-{kind}-ubyte.gz"
            path.write_bytes(gzip.compress(_idx_bytes(array)))
    return directory


@pytest.fixture
def with_fmnist(fake_fmnist_dir, monkeypatch):
    monkeypatch.setenv(images_module.FASHION_MNIST_ENV, str(fake_fmnist_dir))
    return fake_fmnist_dir


def _params(instance) -> list[torch.Tensor]:
    return [p.detach().clone() for p in instance.model.parameters()]


# ---------------------------------------------------------------------------------------------
# The registry.


def test_registry_lists_every_builtin_in_order():
    names = available_problems()
    assert names[: len(BUILTIN)] == BUILTIN
    for name in names:
        problem = get_problem(name)
        assert isinstance(problem, Problem) and problem.name == name
        assert 0 < problem.quick_steps <= 50 and problem.quick_steps <= problem.steps
        assert problem.default_lr_range[0] < problem.default_lr_range[1]


def test_unknown_problem_suggests_close_matches():
    with pytest.raises(ValueError, match="Unknown problem 'digit_mlp'; did you mean 'digits_mlp'"):
        get_problem("digit_mlp")
    with pytest.raises(ValueError) as info:
        load_problem("rosenbrok")
    assert "rosenbrock" in str(info.value) and "\n" not in str(info.value)


def test_register_refuses_duplicates_and_non_problems():
    problem = get_problem("rosenbrock")
    register_problem(problem)  # the same object again is harmless
    clone = Function2DProblem(**{**_fields(problem), "build": None})
    with pytest.raises(ValueError, match="already registered"):
        register_problem(clone)
    with pytest.raises(ValueError, match="expected a Problem"):
        register_problem("rosenbrock")


def _fields(problem) -> dict:
    import dataclasses

    return {f.name: getattr(problem, f.name) for f in dataclasses.fields(problem)}


def test_problem_validates_its_fields():
    good = _fields(get_problem("linear_regression"))
    for key, bad in [
        ("name", "has space"),
        ("kind", "vision"),
        ("steps", 0),
        ("quick_steps", 10_000),
        ("batch_size", 0),
        ("target", float("nan")),
        ("default_lr_range", (1.0, 0.1)),
        ("default_lr_range", (float("nan"), 1.0)),
        ("build", None),
    ]:
        with pytest.raises(ValueError, match="Invalid"):
            Problem(**{**good, key: bad})


def test_builtin_problems_pickle():
    # The lab may send problems to worker processes.
    for name in BUILTIN:
        problem = get_problem(name)
        assert pickle.loads(pickle.dumps(problem)).name == name


# ---------------------------------------------------------------------------------------------
# The contract, for every registered problem.


@pytest.mark.parametrize("name", BUILTIN)
def test_contract(name, with_fmnist):
    problem = get_problem(name)
    assert problem.available()
    instance = problem.make(0)
    assert isinstance(instance, Instance)
    params = list(instance.model.parameters())
    assert params

    loss = instance.train_loss(0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert any(p.grad.abs().sum() > 0 for p in params)

    result = instance.evaluate()
    expected = {"train_loss"}
    if problem.kind == "function2d":
        expected.add("distance_to_minimum")
    else:
        expected.add("val_loss")
        if problem.metric is not None:
            expected.add("val_metric")
    assert set(result) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.values())
    if problem.metric == "accuracy":
        assert 0.0 <= result["val_metric"] <= 1.0


@pytest.mark.parametrize("name", BUILTIN)
def test_same_seed_same_run_and_different_seed_differs(name, with_fmnist):
    problem = get_problem(name)
    a, b, c = problem.make(3), problem.make(3), problem.make(4)
    assert all(torch.equal(p, q) for p, q in zip(_params(a), _params(b), strict=True))
    steps = (0, 1, 7, 31)
    with torch.no_grad():
        la = [a.train_loss(s) for s in steps]
        lb = [b.train_loss(s) for s in reversed(steps)][::-1]  # order of asking is irrelevant
        lc = [c.train_loss(s) for s in steps]
    assert all(torch.equal(x, y) for x, y in zip(la, lb, strict=True))
    assert a.evaluate() == b.evaluate()
    if problem.kind == "function2d":
        return  # deterministic by design: the seed is ignored
    same_params = all(torch.equal(p, q) for p, q in zip(_params(a), _params(c), strict=True))
    same_losses = all(torch.equal(x, y) for x, y in zip(la, lc, strict=True))
    assert not (same_params and same_losses)


def test_make_leaves_global_random_state_alone(with_fmnist):
    torch_state, np_state, py_state = (
        torch.get_rng_state(),
        np.random.get_state()[1],
        random.getstate(),
    )
    for name in NOT_2D:
        instance = get_problem(name).make(1)
        instance.train_loss(0)
    assert torch.equal(torch_state, torch.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])
    assert py_state == random.getstate()


def test_mnist1d_generator_restores_numpys_global_state():
    from optimlab.lab.problems.mnist1d import mnist1d_data

    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    data = mnist1d_data.__wrapped__()  # bypass the cache: really run the generator
    assert np.random.rand() == expected
    assert data["x_train"].shape == (4000, 40) and data["x_val"].shape == (1000, 40)
    assert torch.equal(data["x_train"], mnist1d_data()["x_train"])  # deterministic


@pytest.mark.parametrize("name", NOT_2D)
def test_a_few_sgd_steps_run(name, with_fmnist):
    problem = get_problem(name)
    instance = problem.make(0)
    lr = math.sqrt(problem.default_lr_range[0] * problem.default_lr_range[1]) / 10
    optimizer = torch.optim.SGD(instance.model.parameters(), lr=lr)
    for step in range(3):
        optimizer.zero_grad()
        loss = instance.train_loss(step)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    assert math.isfinite(instance.evaluate()["train_loss"])


def test_epoch_sampler_covers_each_epoch_once_and_allows_random_access():
    n, bs = 103, 10
    sampler = EpochSampler(n, bs, seed=5)
    epoch0 = torch.cat([sampler(s) for s in range(10)])
    assert len(set(epoch0.tolist())) == 100  # 10 full batches, the last 3 examples dropped
    epoch1 = torch.cat([sampler(s) for s in range(10, 20)])
    assert not torch.equal(epoch0, epoch1)
    fresh = EpochSampler(n, bs, seed=5)
    assert torch.equal(fresh(13), sampler(13)) and torch.equal(fresh(2), epoch0[20:30])
    assert torch.equal(EpochSampler(n, None, seed=5)(7), torch.arange(n))


# ---------------------------------------------------------------------------------------------
# 2-D functions.


@pytest.mark.parametrize("name", TWO_D)
def test_2d_minima_have_the_min_value_and_zero_gradient(name):
    problem = get_problem(name)
    assert isinstance(problem, Function2DProblem)
    for minimum in problem.minima:
        xy = torch.tensor(minimum, dtype=torch.float64, requires_grad=True)
        value = problem.function(xy)
        (grad,) = torch.autograd.grad(value, xy)
        assert value.item() == pytest.approx(problem.min_value, abs=1e-10)
        assert grad.abs().max().item() < 1e-6
        (x0, x1), (y0, y1) = problem.bounds
        assert x0 <= minimum[0] <= x1 and y0 <= minimum[1] <= y1


@pytest.mark.parametrize("name", TWO_D)
def test_2d_function_is_vectorised_and_the_instance_starts_at_start(name):
    problem = get_problem(name)
    grid = torch.randn(3, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    values = problem.function(grid)
    assert values.shape == (3, 4)
    assert torch.allclose(values[1, 2], problem.function(grid[1, 2]))
    instance = problem.make(0)
    (point,) = instance.model.parameters()
    assert point.shape == (2,) and point.dtype == torch.float64
    assert tuple(point.tolist()) == problem.start
    assert instance.evaluate()["train_loss"] == problem.function(point).item()
    assert instance.evaluate()["train_loss"] > problem.min_value


def test_2d_known_values():
    f = {n: get_problem(n).function for n in TWO_D}
    t = lambda *xy: torch.tensor(xy, dtype=torch.float64)  # noqa: E731
    assert f["rosenbrock"](t(0.0, 0.0)).item() == 1.0
    assert f["rastrigin"](t(1.0, 0.0)).item() == pytest.approx(1.0)
    assert f["beale"](t(0.0, 0.0)).item() == pytest.approx(1.5**2 + 2.25**2 + 2.625**2)
    assert f["himmelblau"](t(0.0, 0.0)).item() == 170.0
    assert f["saddle"](t(0.0, 0.0)).item() == 0.0  # the saddle point itself
    hessian = torch.autograd.functional.hessian(f["ill_conditioned"], t(0.3, -0.2))
    assert torch.allclose(torch.linalg.eigvalsh(hessian), t(1.0, 100.0))
    saddle_h = torch.autograd.functional.hessian(f["saddle"], t(0.0, 0.0))
    assert torch.allclose(saddle_h, torch.diag(t(2.0, -2.0)))


def test_2d_distance_to_minimum_uses_the_nearest_minimum():
    instance = get_problem("saddle").make(0)
    with torch.no_grad():
        instance.model.xy.copy_(torch.tensor([0.0, -1.0], dtype=torch.float64))
    assert instance.evaluate()["distance_to_minimum"] == pytest.approx(math.sqrt(2) - 1)


# ---------------------------------------------------------------------------------------------
# quadratic_deep against the DeepOBS specification.


def test_quadratic_deep_hessian_spectrum_matches_deepobs():
    hessian, eigenvalues, rotation = deepobs_hessian()
    rng = np.random.RandomState(42)
    drawn = np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)))
    assert np.array_equal(eigenvalues, drawn)
    assert (eigenvalues[:90] > 0).all() and (eigenvalues[:90] < 1).all()
    assert (eigenvalues[90:] > 30).all() and (eigenvalues[90:] < 60).all()
    assert np.allclose(hessian, hessian.T, atol=1e-12)
    assert np.allclose(np.linalg.eigvalsh(hessian), np.sort(eigenvalues), atol=1e-10)
    assert np.allclose(rotation @ rotation.T, np.eye(100), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    # The rotation continues the same generator after the eigenvalues (as DeepOBS does).
    assert np.array_equal(rotation, random_rotation(100, _after_eigenvalues()))


def _after_eigenvalues() -> np.random.RandomState:
    rng = np.random.RandomState(42)
    rng.uniform(0.0, 1.0, 90)
    rng.uniform(30.0, 60.0, 10)
    return rng


def test_random_rotation_is_a_rotation_in_small_dimensions():
    for dim in (2, 3, 4, 7):
        r = random_rotation(dim, np.random.RandomState(dim))
        assert np.allclose(r @ r.T, np.eye(dim), atol=1e-12)
    with pytest.raises(ValueError, match="Invalid dimension"):
        random_rotation(1, np.random.RandomState(0))


def test_quadratic_deep_data_loss_and_budget():
    problem = get_problem("quadratic_deep")
    assert (problem.batch_size, problem.steps, problem.metric) == (128, 700, None)
    train, val = quadratic_data()
    assert train.dtype == torch.float32 and train.shape == val.shape == (1000, 100)
    expected = np.float32(np.random.RandomState(42).normal(0.0, 0.6, (1000, 100)))
    assert np.array_equal(train.numpy(), expected)
    assert np.array_equal(
        val.numpy(), np.float32(np.random.RandomState(43).normal(0.0, 0.6, (1000, 100)))
    )
    instance = problem.make(0)
    assert torch.equal(instance.model.theta, torch.ones(100))
    assert list(instance.model.state_dict()) == ["theta"]  # Q is not a trained parameter
    q = torch.tensor(deepobs_hessian()[0])
    d = 1.0 - train.double()
    full = 0.5 * torch.einsum("ni,ij,nj->n", d, q, d).mean()
    assert instance.evaluate()["train_loss"] == pytest.approx(full.item(), rel=1e-5)
    assert instance.evaluate()["val_loss"] == pytest.approx(_deepobs_test_loss(q, val), rel=1e-5)
    # Minibatches: 128 distinct points per step, 7 steps per epoch, then a new permutation.
    batches = [instance.sampler(s) for s in range(8)]
    assert all(len(b) == 128 for b in batches)
    assert len(set(torch.cat(batches[:7]).tolist())) == 7 * 128


def _deepobs_test_loss(hessian: torch.Tensor, val: torch.Tensor) -> float:
    """DeepOBS's TensorFlow evaluation, spelled out: the unshuffled test set in batches of
    128, the incomplete last batch dropped, the mean of the batch means, at θ = ones."""
    batch_means = []
    for start in range(0, len(val) - 127, 128):
        d = 1.0 - val[start : start + 128].double()
        batch_means.append(0.5 * torch.einsum("ni,ij,nj->n", d, hessian, d).mean().item())
    assert len(batch_means) == 7
    return sum(batch_means) / len(batch_means)


def test_quadratic_deep_initial_test_loss_is_deepobs_published_value():
    # DeepOBS reports 353.4468 as quadratic_deep's test loss before training.
    instance = get_problem("quadratic_deep").make(0)
    assert round(instance.evaluate()["val_loss"], 4) == 353.4468
    q = torch.tensor(deepobs_hessian()[0])
    _, val = quadratic_data()
    assert round(_deepobs_test_loss(q, val), 4) == 353.4468
    # Averaging all 1000 held-out points instead gives another number.
    d = 1.0 - val.double()
    assert round(0.5 * torch.einsum("ni,ij,nj->n", d, q, d).mean().item(), 2) == 353.93


# ---------------------------------------------------------------------------------------------
# The IDX reader.


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_reader_round_trips_images_and_labels(tmp_path, compressed):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    for name, array, magic in (("img", images, 0x0803), ("lab", labels, 0x0801)):
        payload = _idx_bytes(array)
        assert int.from_bytes(payload[:4], "big") == magic
        path = tmp_path / (name + (".gz" if compressed else ""))
        path.write_bytes(gzip.compress(payload) if compressed else payload)
        out = read_idx(path)
        assert out.dtype == np.uint8 and np.array_equal(out, array)


def test_idx_writer_round_trips_other_types(tmp_path):
    for dtype in (np.int8, np.int16, np.int32, np.float32, np.float64):
        array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
        for compress in (False, True):
            path = tmp_path / f"a-{np.dtype(dtype).name}-{compress}"
            write_idx(path, array, compress=compress)
            out = read_idx(path)
            assert out.dtype == array.dtype and np.array_equal(out, array)
    # Big-endian on disk, whatever the machine: 258 as int16 is 01 02.
    write_idx(tmp_path / "be", np.array([258], dtype=np.int16))
    assert (tmp_path / "be").read_bytes()[-2:] == b"\x01\x02"


def test_idx_reader_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="Not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros(4, np.uint8))[:-1])
    with pytest.raises(ValueError, match="size mismatch"):
        read_idx(tmp_path / "short")
    with pytest.raises(ValueError, match="Unsupported IDX dtype"):
        write_idx(tmp_path / "x", np.zeros(2, dtype=np.uint16))


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST present and absent.


@pytest.mark.parametrize("name", ["fmnist_mlp", "fmnist_2c2d"])
def test_fmnist_without_data_is_listed_but_refuses_to_make(name, tmp_path, monkeypatch):
    monkeypatch.setenv(images_module.FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    problem = get_problem(name)  # still registered and describable
    assert name in available_problems()
    assert name not in available_problems(only_available=True)
    assert not problem.available()
    assert "sudo apt-get install dataset-fashion-mnist" in problem.unavailable_reason()
    with pytest.raises(ProblemUnavailable, match="sudo apt-get install dataset-fashion-mnist"):
        problem.make(0)
    with pytest.raises(ProblemUnavailable):
        problem.build(0)  # also when the builder is called directly
    assert isinstance(ProblemUnavailable("x"), RuntimeError)


def test_fmnist_default_directory_is_the_debian_one(monkeypatch, tmp_path):
    monkeypatch.delenv(images_module.FASHION_MNIST_ENV, raising=False)
    assert str(images_module.fashion_mnist_dir()) == "/usr/share/datasets/fashion-mnist"
    monkeypatch.setattr(images_module, "FASHION_MNIST_DIR", tmp_path)
    assert images_module.fashion_mnist_dir() == tmp_path
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"")  # the others are missing
    reason = images_module.fashion_mnist_missing()
    assert "train-images-idx3-ubyte[.gz]" in reason and "train-labels" not in reason
    monkeypatch.setattr(images_module, "FASHION_MNIST_DIR", tmp_path / "absent")
    assert "no directory" in images_module.fashion_mnist_missing()


def test_fmnist_reads_the_idx_files(with_fmnist):
    instance = get_problem("fmnist_2c2d").make(0)
    x, y = instance.x, instance.y
    assert x.shape == (300, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.long
    raw = read_idx(with_fmnist / "train-images-idx3-ubyte.gz")
    assert np.array_equal(x[:, 0].numpy(), raw)
    assert len(instance.val[1]) == 100
    # DeepOBS's 2c2d: 3,274,634 parameters.
    assert sum(p.numel() for p in instance.model.parameters()) == 3_274_634
    mlp = get_problem("fmnist_mlp").make(0)
    assert sum(p.numel() for p in mlp.model.parameters()) == 1_336_610


# ---------------------------------------------------------------------------------------------
# A user's own problem.

USER_MODULE = """
from optimlab.lab.problems import Problem
from optimlab.lab.problems.regression import build_linear_regression


def my_problem():
    return Problem(
        name="my_problem",
        description="user problem",
        kind="regression",
        steps=10,
        quick_steps=2,
        batch_size=8,
        target=0.5,
        metric="r2",
        default_lr_range=(1e-3, 1.0),
        build=build_linear_regression,
    )


READY = my_problem()
NOT_CALLABLE = 3


def returns_int():
    return 3
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = f"user_problems_{abs(hash(str(tmp_path))) % 10**8}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, path
    sys.modules.pop(name, None)


def test_load_user_problem_by_module_function(user_module):
    name, path = user_module
    problem = load_problem(f"{name}:my_problem")
    assert problem.name == "my_problem" and problem.kind == "regression"
    assert torch.isfinite(problem.make(0).train_loss(0))
    assert load_problem(f"{name}:READY").name == "my_problem"  # a Problem attribute works too
    assert load_problem(f"{path}:my_problem").name == "my_problem"  # and a file path
    assert load_problem("quadratic_deep") is get_problem("quadratic_deep")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "Invalid problem spec"),
        (":my_problem", "Invalid problem spec"),
        ("{mod}:", "Invalid problem spec"),
        ("{mod}:not an identifier", "Invalid problem spec"),
        ("not a module:f", "is not a module name"),
        ("surely_no_such_module_xyz:f", "cannot import"),
        ("{mod}:missing", "has no attribute 'missing'"),
        ("{mod}:NOT_CALLABLE", "neither a Problem nor a function"),
        ("{mod}:returns_int", "returned int, not a Problem"),
        ("/no/such/file.py:f", "no such file"),
        ("no_such_problem", "Unknown problem"),
    ],
)
def test_bad_problem_specs_raise_one_line_value_errors(user_module, spec, message):
    with pytest.raises(ValueError, match=message) as info:
        load_problem(spec.format(mod=user_module[0]))
    assert "\n" not in str(info.value)


def test_the_documented_user_problem_runs(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "problems.md").read_text()
    block = doc.split("<!-- user-problem-example -->", 1)[1]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "myproblems.py"
    path.write_text(code)
    problem = load_problem(f"{path}:sine_mlp")
    a, b = problem.make(0), problem.make(0)
    optimizer = torch.optim.SGD(a.model.parameters(), lr=0.1)
    for step in range(3):
        optimizer.zero_grad()
        a.train_loss(step).backward()
        optimizer.step()
    assert set(a.evaluate()) == {"train_loss", "val_loss"}
    assert torch.equal(b.train_loss(5), problem.make(0).train_loss(5))
