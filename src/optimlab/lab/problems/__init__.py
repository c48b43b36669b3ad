"""Benchmark problems for the optimizer lab.

Every problem is small, real and runs offline on two CPU cores:

=====================  ==============  ====================================================
name                   kind            what
=====================  ==============  ====================================================
rosenbrock             function2d      banana valley, start (-1.2, 1)
rastrigin              function2d      bowl covered with local minima
beale                  function2d      plateaus and steep ridges
himmelblau             function2d      four global minima
ill_conditioned        function2d      quadratic, condition number 100, rotated 30°
saddle                 function2d      x² − y² + y⁴/4 from next to the saddle
tutorial_quadratic     function2d      the tutorials' (x − 1)² + (y − 2)², start (0, 0)
linear_regression      regression      least squares, synthetic data with known weights
logistic_regression    classification  breast-cancer table (scikit-learn), L2 1e-3
tutorial_regression    regression      the tutorials' y = 3x + 2 + N(0, 1), 100 samples
quadratic_deep         quadratic       DeepOBS's 100-D noisy quadratic
digits_mlp/_cnn        classification  scikit-learn's 8×8 digits
fmnist_mlp/_2c2d       classification  DeepOBS networks on Fashion-MNIST (Debian package)
mnist1d_mlp/_cnn       classification  MNIST-1D, generated procedurally
char_transformer       language        2-layer char transformer on pydoc's topics text
=====================  ==============  ====================================================

Use::

    from optimlab.lab.problems import get_problem, load_problem, available_problems

    problem = get_problem("digits_mlp")            # or load_problem("mymodule:my_problem")
    instance = problem.make(seed=0)
    loss = instance.train_loss(step=0)             # scalar, with grad
    metrics = instance.evaluate()                  # {"train_loss", "val_loss", "val_metric"}

See :mod:`.base` for the contract and ``docs/problems.md`` for writing your own problem.
Heavy dependencies (scikit-learn, mnist1d) are imported only when a problem is made.
"""

from . import functions2d, images, mnist1d, quadratic_deep, regression, text, tutorial
from .base import Instance, Problem, ProblemUnavailable
from .functions2d import Function2DProblem
from .idx import read_idx, write_idx
from .registry import available_problems, get_problem, load_problem, register_problem

__all__ = [
    "Function2DProblem",
    "Instance",
    "Problem",
    "ProblemUnavailable",
    "available_problems",
    "get_problem",
    "load_problem",
    "read_idx",
    "register_problem",
    "write_idx",
]

# Grouped by kind: each tutorial example joins its kind.
for _problem in (
    *functions2d.PROBLEMS,
    tutorial.TUTORIAL_QUADRATIC,
    *regression.PROBLEMS,
    tutorial.TUTORIAL_REGRESSION,
    *quadratic_deep.PROBLEMS,
    *images.PROBLEMS,
    *mnist1d.PROBLEMS,
    *text.PROBLEMS,
):
    register_problem(_problem)
del _problem
