"""Option values from a config file become defaults; the command line still wins."""

from optimlab.lab.cli import build_parser
from optimlab.lab.config_file import apply_config

TOML = """
problems = ["digits_mlp", "rosenbrock"]
optimizers = ["sgd", "adam:eps=1e-6"]
budget = 5
quick = true
lr-range = [1e-4, 0.5]
search = "optuna"
"""


def _parse(tmp_path, *extra):
    path = tmp_path / "lab.toml"
    path.write_text(TOML)
    argv = ["compare", "--config", str(path), *extra]
    parser = build_parser()
    sub = parser.commands["compare"]
    return apply_config(parser, sub, str(path), argv)


def test_config_values_are_used(tmp_path):
    args = _parse(tmp_path)
    assert args.problems == ["digits_mlp", "rosenbrock"]
    assert args.optimizers == ["sgd", "adam:eps=1e-6"]
    assert (args.budget, args.quick, args.lr_range, args.search) == (5, True, (1e-4, 0.5), "optuna")


def test_command_line_wins(tmp_path):
    args = _parse(tmp_path, "--budget", "9", "-o", "momentum")
    assert args.budget == 9 and args.optimizers == ["momentum"]
    assert args.problems == ["digits_mlp", "rosenbrock"]
