"""docs/published-numbers.md: the rows that are cheap to recompute are recomputed, and the
MNIST-1D baselines' setup is checked piece by piece (the full 6000-step runs take minutes and
are left to ``python docs/published_numbers.py``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optimlab.lab.problems import get_problem
from optimlab.lab.problems.mnist1d import mnist1d_cnn, mnist1d_data, mnist1d_mlp

from docs_scripts import docs_script


@pytest.fixture(scope="module")
def script():
    with docs_script("published_numbers") as module:
        yield module


def _page_rows(script) -> dict[str, str]:
    from pageblocks import page_blocks

    table = page_blocks(script.PAGE.read_text(encoding="utf-8"))["published-table"]
    lines = table.splitlines()
    return {row.name: line for row in script.ROWS for line in lines if row.command in line}


def test_every_row_is_on_the_page_with_its_command(script):
    rows = _page_rows(script)
    assert list(rows) == [row.name for row in script.ROWS]
    for row in script.ROWS:
        assert rows[row.name].startswith(f"| {row.quantity} | {row.published} | {row.how} | ")


def test_the_quadratic_deep_row_is_what_the_command_computes(script):
    row = script.ROWS_BY_NAME["quadratic_deep"]
    result = row.compute()
    assert result == "353.4468" == row.published
    assert _page_rows(script)["quadratic_deep"] == script.table_line(row, result)


def test_the_command_refuses_unknown_rows(script, capsys):
    with pytest.raises(SystemExit) as info:
        script.main(["no_such_row"])
    assert info.value.code == 2
    assert "unknown row 'no_such_row'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The MNIST-1D baselines' networks and training setup (greydanus/mnist1d, notebooks/).


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_networks_have_the_baselines_parameter_counts():
    # The notebooks print "Initialized MLPBase model with 15210 parameters" and
    # "Initialized ConvBase model with 5210 parameters".
    assert _count(mnist1d_mlp()) == 15_210
    assert _count(mnist1d_cnn()) == 5_210
    for name, count in (("mnist1d_mlp", 15_210), ("mnist1d_cnn", 5_210)):
        assert _count(get_problem(name).make(0).model) == count


def test_the_mlp_is_residual_and_the_cnn_shrinks_40_to_5():
    mlp = mnist1d_mlp()
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(0))
    h = torch.relu(mlp.hidden(x))
    expected = mlp.out(h + torch.relu(mlp.residual(h)))
    assert torch.allclose(mlp(x), expected)
    cnn = mnist1d_cnn()
    lengths = []
    out = x
    for layer in cnn:
        out = layer(out)
        if isinstance(layer, torch.nn.Conv1d):
            lengths.append(out.shape[-1])
    assert lengths == [19, 10, 5] and out.shape == (3, 10)


def test_seed_42_gives_the_baselines_initialisation():
    # The baselines build nn.Linear(40, 100), nn.Linear(100, 100), nn.Linear(100, 10) (and
    # Conv1d ×3, Linear) in this order right after torch.manual_seed(42).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(42)
        layers = [torch.nn.Linear(40, 100), torch.nn.Linear(100, 100), torch.nn.Linear(100, 10)]
        torch.manual_seed(42)
        mlp = mnist1d_mlp()
    expected = [t for layer in layers for t in (layer.weight, layer.bias)]
    assert all(torch.equal(a, b) for a, b in zip(mlp.parameters(), expected, strict=True))


def test_baseline_batches_are_a_fixed_order(script):
    assert script.baseline_batch(0) == slice(0, 100)
    assert script.baseline_batch(39) == slice(3900, 4000)
    assert script.baseline_batch(40) == slice(0, 100)  # an epoch is 40 steps, then it repeats
    assert script.baseline_batch(6000) == slice(0, 100)


def test_a_short_baseline_run_gives_known_values(script):
    a = script.train_baseline(mnist1d_mlp, steps=40)
    b = script.train_baseline(mnist1d_mlp, steps=40)
    assert a == b and len(a["losses"]) == 41
    # Known values of this run: one epoch (plus the first batch again) of the seed-42 MLP.
    # Cross-entropy starts near ln 10 = 2.303 for ten classes.
    assert a["losses"][0] == pytest.approx(2.30591, rel=1e-5)
    assert a["losses"][-1] == pytest.approx(1.47503, rel=1e-3)
    assert a["final"] == a["best"] == pytest.approx(0.374, abs=0.0015)
    data = mnist1d_data()
    # The step-0 loss is the cross-entropy of the untrained seed-42 network on rows 0-99.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(42)
        model = mnist1d_mlp()
    first = F.cross_entropy(model(data["x_train"][:100]), data["y_train"][:100]).item()
    assert a["losses"][0] == first
