"""Optimizer specs of the lab: registry names, presets, ``name:key=value`` overrides."""

import pytest
import torch

from optimlab.lab.errors import LabError
from optimlab.lab.optimizers import build_optimizer, parse_optimizers, state_bytes_per_param
from optimlab.lab.specs import parse_optimizer, split_specs


def test_registry_name_and_presets():
    assert parse_optimizer("adam").name == "adam"
    assert parse_optimizer("ADAM").label == "adam"
    momentum = parse_optimizer("momentum")
    assert (momentum.name, momentum.hparams) == ("sgd", {"momentum": 0.9})
    nesterov = parse_optimizer("nesterov")
    assert nesterov.hparams == {"momentum": 0.9, "nesterov": True}


def test_overrides_parse_literals_and_tuples():
    spec = parse_optimizer("adam:betas=(0.9,0.99),eps=1e-6,amsgrad=true")
    assert spec.name == "adam"
    assert spec.hparams == {"betas": (0.9, 0.99), "eps": 1e-6, "amsgrad": True}
    assert spec.label == "adam:betas=(0.9,0.99),eps=1e-06,amsgrad=True"
    assert parse_optimizer("momentum:momentum=0.95").hparams == {"momentum": 0.95}
    assert parse_optimizer("sgd:lr=0.1").fixed_lr == 0.1


def test_built_optimizer_has_the_hyperparameters():
    p = torch.zeros(3, requires_grad=True)
    opt = build_optimizer("nesterov", [p], lr=0.1)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.1, 0.9, True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "unknown optimizer 'nope'"),
        ("adam:foo=1", "bad hyperparameter for optimizer 'adam:foo=1'"),
        ("adam:lr=-1", "Invalid learning rate"),
        ("adam:betas=(1.5,0.9)", "Invalid beta parameter at index 0"),
        ("adam:eps", "expected key=value"),
        ("adam:eps=abc", "is not a number"),
        (":eps=1", "no optimizer name"),
    ],
)
def test_bad_specs_give_one_clear_error(text, message):
    with pytest.raises(LabError, match=message.replace("(", r"\(")) as info:
        parse_optimizers([text])
    assert "\n" not in str(info.value)


def test_split_specs_keeps_hyperparameters_together():
    assert split_specs(["sgd,adam", "momentum"]) == ["sgd", "adam", "momentum"]
    assert split_specs(["adam:betas=(0.9,0.99),eps=1e-6,sgd"]) == [
        "adam:betas=(0.9,0.99),eps=1e-6",
        "sgd",
    ]


def test_state_bytes_per_param_counts_every_state_tensor():
    p = torch.zeros(1000, requires_grad=True)
    opt = build_optimizer("adam", [p], lr=1e-3)
    p.grad = torch.ones_like(p)
    opt.step()
    step_bytes = opt.state[p]["step"].element_size()
    # exp_avg and exp_avg_sq in float32, plus the 0-d step counter
    assert state_bytes_per_param(opt) == pytest.approx((8000 + step_bytes) / 1000)
