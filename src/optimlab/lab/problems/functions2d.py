"""Two-dimensional test functions: small enough to draw, hard in well-known ways.

Each is a :class:`Function2DProblem`: the model holds one parameter, the point ``(x, y)`` of
shape ``(2,)`` started at ``start``; ``train_loss(step) = f(point)`` (full batch, no noise);
``evaluate()`` returns ``{"train_loss": f(point), "distance_to_minimum": ‖point − m‖}`` for
the nearest listed minimum ``m``. The seed is ignored: the problems are deterministic and
start from a fixed point so trajectories of different optimizers can share one contour plot.

The point is float64: near a minimum these functions reach 1e-12 and float32 rounding would
put a floor of ~1e-7 under the loss, so "steps to target" would measure rounding, not the
optimizer.

References: Rosenbrock, "An automatic method for finding the greatest or least value of a
function", Computer J. 3 (1960); Rastrigin (1974), as popularised by Mühlenbein et al. (1991);
Beale, "On an iterative method for finding a local minimum of a function of more than one
variable" (1958); Himmelblau, "Applied Nonlinear Programming" (1972); the test-function
catalogue of Surjanovic & Bingham, https://www.sfu.ca/~ssurjano/optimization.html.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .base import Problem

Tensor = torch.Tensor

__all__ = [
    "Function2DProblem",
    "beale",
    "himmelblau",
    "ill_conditioned",
    "rastrigin",
    "rosenbrock",
    "saddle",
]


@dataclass(frozen=True, kw_only=True)
class Function2DProblem(Problem):
    """A :class:`~.base.Problem` on a 2-D function, with what a contour plot needs.

    Attributes:
        function: ``f(xy)`` for ``xy`` of shape ``(..., 2)``, returning shape ``(...)``;
            vectorised so a plot can evaluate a whole grid at once.
        start: the starting point.
        bounds: ``((xmin, xmax), (ymin, ymax))``, the plotting window.
        minima: the global minimisers (several for Himmelblau and the saddle).
        min_value: ``f`` at the minima.

    ``build`` may be left out: it then makes a :class:`Function2DInstance` at ``start``.
    """

    function: Callable[[Tensor], Tensor] = field(repr=False, compare=False)
    start: tuple[float, float]
    bounds: tuple[tuple[float, float], tuple[float, float]]
    minima: tuple[tuple[float, float], ...]
    min_value: float = 0.0
    build: Callable[[int], Function2DInstance] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.build is None:
            # A plain object rather than a bound method or closure, so that the problem stays
            # picklable (to send to a worker process) whenever its function is.
            builder = Function2DBuilder(self.function, self.start, self.minima)
            object.__setattr__(self, "build", builder)  # frozen dataclass: set once, here
        super().__post_init__()


class Point(torch.nn.Module):
    """The trained "model" of a 2-D problem: a single point ``xy``."""

    def __init__(self, start: tuple[float, float]) -> None:
        super().__init__()
        self.xy = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))


class Function2DInstance:
    def __init__(
        self,
        function: Callable[[Tensor], Tensor],
        start: tuple[float, float],
        minima: tuple[tuple[float, float], ...],
    ) -> None:
        self.function = function
        self.minima = torch.tensor(minima, dtype=torch.float64).reshape(-1, 2)
        self.model = Point(start)

    def train_loss(self, step: int) -> Tensor:
        return self.function(self.model.xy)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        xy = self.model.xy
        return {
            "train_loss": self.function(xy).item(),
            "distance_to_minimum": (self.minima - xy).norm(dim=-1).min().item(),
        }


class Function2DBuilder:
    """``seed -> Function2DInstance``; the seed is ignored (see the module docstring)."""

    def __init__(self, function, start, minima) -> None:
        self.function, self.start, self.minima = function, start, minima

    def __call__(self, seed: int) -> Function2DInstance:
        return Function2DInstance(self.function, self.start, self.minima)


# ---------------------------------------------------------------------------------------------
# The functions (all accept xy[..., 2]).


def rosenbrock(xy: Tensor, a: float = 1.0, b: float = 100.0) -> Tensor:
    """Rosenbrock's banana: ``f = (a − x)² + b (y − x²)²``; minimum ``f(a, a²) = 0``.

    The minimum sits in a long, curved, flat-bottomed valley: finding the valley is easy,
    following it is what separates optimizers.
    """
    x, y = xy[..., 0], xy[..., 1]
    return (a - x) ** 2 + b * (y - x**2) ** 2


def rastrigin(xy: Tensor, amplitude: float = 10.0) -> Tensor:
    """Rastrigin: ``f = 2A + Σᵢ (xᵢ² − A cos 2πxᵢ)`` with ``A = 10``; minimum ``f(0, 0) = 0``.

    A bowl covered in a lattice of local minima near the integer points: local methods stop in
    one of them, so it shows how far momentum or a large step can carry an optimizer.
    """
    return 2 * amplitude + (xy**2 - amplitude * torch.cos(2 * math.pi * xy)).sum(-1)


def beale(xy: Tensor) -> Tensor:
    """Beale: ``f = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²``;
    minimum ``f(3, 0.5) = 0``.

    Flat plateaus and steep ridges in the corners: gradients span many orders of magnitude.
    """
    x, y = xy[..., 0], xy[..., 1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def himmelblau(xy: Tensor) -> Tensor:
    """Himmelblau: ``f = (x² + y − 11)² + (x + y² − 7)²``; four minima with ``f = 0``.

    Which basin an optimizer ends in depends on its path, so trajectories differ visibly.
    """
    x, y = xy[..., 0], xy[..., 1]
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


ILL_CONDITIONED_EIGENVALUES = (1.0, 100.0)
ILL_CONDITIONED_ANGLE = math.pi / 6


def ill_conditioned(xy: Tensor) -> Tensor:
    """A quadratic with condition number 100 whose axes are rotated by 30°:
    ``f = ½ (λ₁ u² + λ₂ v²)``, ``(u, v) = R(30°)ᵀ (x, y)``, ``λ = (1, 100)``; minimum
    ``f(0, 0) = 0``.

    Rotated on purpose: with axis-aligned curvature a per-coordinate method (Adam, Adagrad)
    would remove the ill-conditioning for free, which real problems never allow.
    Gradient descent is stable only for ``lr < 2/λ₂ = 0.02`` and then crawls along ``u`` at
    rate ``1 − lr λ₁``.
    """
    c, s = math.cos(ILL_CONDITIONED_ANGLE), math.sin(ILL_CONDITIONED_ANGLE)
    x, y = xy[..., 0], xy[..., 1]
    u, v = c * x + s * y, -s * x + c * y
    l1, l2 = ILL_CONDITIONED_EIGENVALUES
    return 0.5 * (l1 * u**2 + l2 * v**2)


def saddle(xy: Tensor) -> Tensor:
    """A saddle that is bounded below: ``f = x² − y² + y⁴/4``.

    The origin is a saddle point (Hessian ``diag(2, −2)``); the quartic term turns the
    descending direction back up, giving two global minima ``f(0, ±√2) = −1``. (The bare
    ``x² − y²`` has no minimum at all, so "loss reached" would be meaningless.) Started
    almost on the saddle's stable manifold ``y = 0``, gradient descent first rushes to the
    saddle and then needs many steps to escape it, since ``y`` grows only by a factor
    ``1 + 2 lr`` per step; the test is how quickly an optimizer leaves.
    """
    x, y = xy[..., 0], xy[..., 1]
    return x**2 - y**2 + y**4 / 4


# ---------------------------------------------------------------------------------------------
# The problems.


def _problem(**kw) -> Function2DProblem:
    kw.setdefault("quick_steps", 50)
    return Function2DProblem(kind="function2d", batch_size=None, metric=None, **kw)


SQRT2 = math.sqrt(2.0)

PROBLEMS = [
    _problem(
        name="rosenbrock",
        description="Rosenbrock banana valley (a=1, b=100) from Rosenbrock's start (-1.2, 1)",
        function=rosenbrock,
        start=(-1.2, 1.0),
        bounds=((-2.0, 2.0), (-1.0, 3.0)),
        minima=((1.0, 1.0),),
        steps=1000,
        # Momentum SGD passes 1e-4 after ~300 steps; Adam and plain SGD do not within 1000.
        target=1e-4,
        default_lr_range=(1e-5, 1.0),
    ),
    _problem(
        name="rastrigin",
        description="Rastrigin: a bowl covered with local minima (A=10)",
        function=rastrigin,
        start=(-2.7, 2.3),
        bounds=((-5.12, 5.12), (-5.12, 5.12)),
        minima=((0.0, 0.0),),
        steps=500,
        # Reached only by finding the global basin: gradient methods tuned on a log grid stop
        # in a local minimum (f ≈ 13 from this start), which is what this problem shows.
        target=1e-3,
        default_lr_range=(1e-4, 1.0),
    ),
    _problem(
        name="beale",
        description="Beale: plateaus and steep ridges, minimum at (3, 0.5)",
        function=beale,
        start=(1.0, 1.5),
        bounds=((-4.5, 4.5), (-4.5, 4.5)),
        minima=((3.0, 0.5),),
        steps=1000,
        target=1e-4,
        default_lr_range=(1e-5, 1.0),
    ),
    _problem(
        name="himmelblau",
        description="Himmelblau: four global minima, the path decides which",
        function=himmelblau,
        start=(0.0, 0.0),
        bounds=((-5.0, 5.0), (-5.0, 5.0)),
        # Refined by Newton's method to float64 precision (the gradient there is ~1e-14).
        minima=(
            (3.0, 2.0),
            (-2.805118086952745, 3.131312518250573),
            (-3.779310253377747, -3.2831859912861696),
            (3.5844283403304917, -1.8481265269644034),
        ),
        steps=500,
        target=1e-4,
        default_lr_range=(1e-5, 1.0),
    ),
    _problem(
        name="ill_conditioned",
        description="Quadratic with condition number 100, axes rotated by 30 degrees",
        function=ill_conditioned,
        start=(-3.0, 2.0),
        bounds=((-4.0, 4.0), (-4.0, 4.0)),
        minima=((0.0, 0.0),),
        steps=500,
        target=1e-4,
        default_lr_range=(1e-4, 1.0),
    ),
    _problem(
        name="saddle",
        description="Saddle x^2 - y^2 + y^4/4, started next to the saddle point",
        function=saddle,
        start=(-1.5, 1e-3),
        bounds=((-2.0, 2.0), (-2.0, 2.0)),
        minima=((0.0, SQRT2), (0.0, -SQRT2)),
        min_value=-1.0,
        steps=500,
        target=-1.0 + 1e-4,
        default_lr_range=(1e-4, 1.0),
    ),
]
