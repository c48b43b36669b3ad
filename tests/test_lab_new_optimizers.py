"""The lab runs every registered optimizer: search spaces come from the classes, and Muon is
given a whole model the way its authors split one."""

import pytest
import torch
from torch import nn

import optimlab
from optimlab.lab.cli import main
from optimlab.lab.optimizers import build_optimizer
from optimlab.lab.tuning import apply_hyper, optimizer_defaults, search_params, search_space


@pytest.mark.parametrize("name", optimlab.available_optimizers())
def test_every_optimizer_has_the_search_space_its_class_declares(name):
    declared = optimlab.get_optimizer_class(name).search_space
    assert search_space(name) == tuple(declared) and declared
    assert search_params(name, "all") == list(declared)
    defaults = optimizer_defaults(name, {})
    for hyper in declared:  # every declared name lands in a keyword the constructor takes
        kwargs: dict = {}
        apply_hyper(
            hyper, (hyper.low * hyper.high) ** 0.5 if hyper.log else hyper.low, kwargs, defaults
        )
        optimlab.create_optimizer(name, [torch.zeros(2, 2, requires_grad=True)], **kwargs)


def test_betas_reparametrisations_keep_the_other_half():
    space = {h.name: h for h in search_space("lion")}
    kwargs: dict = {}
    apply_hyper(space["one_minus_beta2"], 0.02, kwargs, {"betas": (0.9, 0.99)})
    apply_hyper(space["beta1"], 0.95, kwargs, {"betas": (0.9, 0.99)})
    assert kwargs == {"betas": (0.95, 0.98)}


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.conv = nn.Conv1d(8, 8, 3)
        self.hidden = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 10)


def test_the_lab_gives_muon_the_hidden_matrices_and_adamw_the_rest():
    net = _Net()
    opt = build_optimizer("muon", net, lr=0.003)
    muon, adamw = opt.param_groups
    assert [p is q for p, q in zip(muon["params"], [net.conv.weight, net.hidden.weight])] == [
        True,
        True,
    ]
    assert muon["use_muon"] and muon["flatten"] and muon["adjust_lr_fn"] == "match_rms_adamw"
    rest = {id(p) for p in adamw["params"]}
    assert rest == {
        id(p) for n, p in net.named_parameters() if n not in ("conv.weight", "hidden.weight")
    }
    assert not adamw["use_muon"] and adamw["eps"] == 1e-8
    assert muon["lr"] == adamw["lr"] == 0.003  # the lab's one tuned lr serves both groups
    # every other optimizer gets the trainable parameters as they are
    adam = build_optimizer("adamw", net, lr=0.003)
    assert len(adam.param_groups) == 1 and len(adam.param_groups[0]["params"]) == 9


def test_compare_runs_lion_adafactor_and_muon(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compare", "-p", "digits_mlp", "-o", "lion", "adafactor", "muon", "--out", str(out)]
    assert main([*argv, "--quick", "--seeds", "1", "--budget", "2", "--no-lr-find"]) == 0
    text = capsys.readouterr().out
    for name in ("lion", "adafactor", "muon"):
        assert name in text


def test_muon_on_a_problem_without_hidden_matrices_is_said_to_be_adamw(tmp_path, capsys):
    """Logistic regression has no hidden matrix (its one linear layer is the output head), so
    Muon's AdamW group steps every parameter: the ranking's notes say so, in the terminal and
    in the report, and say nothing of the MLP, whose hidden matrices Muon does step."""
    out = tmp_path / "out"
    argv = ["compare", "-p", "logistic_regression", "digits_mlp", "-o", "muon", "adam"]
    argv += ["--out", str(out), "--quick", "--seeds", "1", "--budget", "2", "--no-lr-find"]
    assert main(argv) == 0
    text = " ".join(capsys.readouterr().out.split())
    note = (
        "Fallback: muon on logistic_regression: no parameter of this problem is of the kind "
        "Muon is for, so its AdamW group stepped them all; these rows measure AdamW under "
        "muon's name."
    )
    assert note in text
    assert "muon on digits_mlp" not in text and "adam on logistic_regression" not in text
    (report,) = out.glob("reports/*/report.md")
    assert note in " ".join(report.read_text().split())


def test_muon_s_own_share_is_its_hidden_matrices_share():
    from optimlab import Muon

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    assert Muon.own_share(torch.nn.Linear(4, 3)) == 0.0  # a head alone
    hidden = 4 * 8  # the first weight; its bias, the head's weight and bias go to AdamW
    assert Muon.own_share(net) == hidden / sum(p.numel() for p in net.parameters())
