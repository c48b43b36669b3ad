"""Tests of optimlab.guards.StepDiagnostics: each field against numbers computed here by hand."""

from __future__ import annotations

import math

import pytest
import torch

from optimlab.guards import (
    EMA,
    Lookahead,
    StepDiagnostics,
    StepRecord,
    accumulate_gradients,
    clip_gradients,
    skip_nonfinite,
)

F64 = torch.float64


def close(actual, expected, rtol=1e-12, atol=1e-15):
    actual, expected = (torch.as_tensor(x, dtype=F64) for x in (actual, expected))
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def leaf_params(seed=0, shapes=((3, 4), (5,), (2, 3))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=F64).requires_grad_() for s in shapes]


def set_grads(params, seed=1):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=F64)


def norm(tensors):
    return torch.linalg.vector_norm(torch.cat([t.flatten() for t in tensors])).item()


def hand_lr_stats(deltas, grads):
    """min, median (mean of the middle two), max of |Δθ|/|g| over non-zero g, by sorting."""
    d = torch.cat([x.flatten() for x in deltas]).abs()
    g = torch.cat([x.flatten() for x in grads])
    keep = g != 0
    r = (d[keep] / g[keep].abs()).sort().values
    n = r.numel()
    return r[0].item(), ((r[(n - 1) // 2] + r[n // 2]) / 2).item(), r[-1].item()


def test_sgd_update_is_minus_lr_g_and_effective_lr_is_lr():
    params = leaf_params()
    groups = [{"params": params[:2], "lr": 0.1}, {"params": params[2:], "lr": 0.03}]
    opt = torch.optim.SGD(groups)
    records: list[StepRecord] = []
    diag = StepDiagnostics(opt, records.append, per_parameter=True)
    set_grads(params)
    before = [p.detach().clone() for p in params]
    opt.step()

    assert len(records) == 1
    rec = records[0]
    assert rec.step == 1 and rec.applied
    assert rec.skipped is None and rec.grad_norm_before_clip is None
    for gi, (lo, hi, lr) in enumerate([(0, 2, 0.1), (2, 3, 0.03)]):
        g = rec.groups[gi]
        grads = [p.grad for p in params[lo:hi]]
        deltas = [p.detach() - b for p, b in zip(params[lo:hi], before[lo:hi], strict=True)]
        assert g.group == gi and g.lr == lr and g.nonfinite is None and g.info == {}
        close(g.grad_norm, norm(grads))
        close(g.update_norm, norm(deltas))
        close(g.update_norm, lr * norm(grads))  # Δθ = −lr·g
        close(g.param_norm, norm(before[lo:hi]))
        close(g.update_ratio, norm(deltas) / norm(before[lo:hi]))
        for got, want in zip(
            (g.effective_lr_min, g.effective_lr_median, g.effective_lr_max),
            hand_lr_stats(deltas, grads),
            strict=True,
        ):
            close(got, want)
            close(got, lr, rtol=1e-9)

    assert [(r.group, r.index, r.name, r.shape) for r in rec.parameters] == [
        (0, 0, "group0.param0", (3, 4)),
        (0, 1, "group0.param1", (5,)),
        (1, 0, "group1.param0", (2, 3)),
    ]
    for row, p, b in zip(rec.parameters, params, before, strict=True):
        close(row.grad_norm, p.grad.norm().item())
        close(row.update_norm, (p.detach() - b).norm().item())
        close(row.param_norm, b.norm().item())
        close(row.update_ratio, (p.detach() - b).norm().item() / b.norm().item())
        want = hand_lr_stats([p.detach() - b], [p.grad])
        close((row.effective_lr_min, row.effective_lr_median, row.effective_lr_max), want)
    diag.close()


def test_adam_effective_lr_spread_and_zero_gradients_left_out():
    params = leaf_params()
    opt = torch.optim.Adam(params, lr=0.01, weight_decay=0.1)
    ref = [p.detach().clone().requires_grad_() for p in params]
    ref_opt = torch.optim.Adam(ref, lr=0.01, weight_decay=0.1)
    records = []
    StepDiagnostics(opt, records.append)
    for seed in (1, 2, 3):
        set_grads(params, seed)
        set_grads(ref, seed)
        params[0].grad[0].zero_()  # these elements still move (momentum, decay): left out
        ref[0].grad[0].zero_()
        before = [r.detach().clone() for r in ref]
        opt.step()
        ref_opt.step()
        deltas = [r.detach() - b for r, b in zip(ref, before, strict=True)]
        g = records[-1].groups[0]
        close(g.update_norm, norm(deltas))
        close(g.grad_norm, norm([r.grad for r in ref]))
        lo, med, hi = hand_lr_stats(deltas, [r.grad for r in ref])
        close((g.effective_lr_min, g.effective_lr_median, g.effective_lr_max), (lo, med, hi))
        assert lo < med < hi  # the spread that the preconditioner creates


def test_every_and_close():
    params = leaf_params()
    opt = torch.optim.SGD(params, lr=0.1)
    records = []
    diag = StepDiagnostics(opt, records.append, every=3)
    for seed in range(7):
        set_grads(params, seed)
        opt.step()
    assert [r.step for r in records] == [1, 4, 7]
    assert diag.last_record is records[-1]
    diag.close()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    opt.step()
    assert len(records) == 3
    with StepDiagnostics(opt) as d:  # callback is optional
        opt.step()
        assert d.last_record.step == 1
    assert not opt._optimizer_step_pre_hooks


def test_names_from_module_and_missing_grad():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)).to(F64)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    diag = StepDiagnostics(opt, per_parameter=True, named_parameters=net)
    net(torch.ones(4, 3, dtype=F64)).sum().backward()
    net[1].bias.grad = None
    opt.step()
    rows = diag.last_record.parameters
    assert [r.name for r in rows] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert rows[3].grad_norm == 0.0 and rows[3].update_norm == 0.0
    assert all(math.isnan(v) for v in (rows[3].effective_lr_min, rows[3].effective_lr_max))


def test_with_guards_clip_nonfinite_and_accumulation():
    params = leaf_params()
    opt = skip_nonfinite(clip_gradients(torch.optim.SGD(params, lr=0.1), max_norm=0.5))
    records = []
    StepDiagnostics(opt, records.append)
    set_grads(params)
    raw = norm([p.grad for p in params])
    opt.step()
    rec = records[-1]
    close(rec.grad_norm_before_clip, raw)
    close(rec.groups[0].grad_norm, 0.5 * raw / (raw + 1e-6))  # the clipped gradient was used
    assert (rec.skipped, rec.total_skips, rec.groups[0].nonfinite) == (False, 0, 0)

    set_grads(params, 2)
    params[1].grad[2] = float("nan")
    params[2].grad[0, 0] = float("inf")
    opt.step()
    rec = records[-1]
    assert not rec.applied and rec.skipped
    assert (rec.total_skips, rec.consecutive_skips, rec.groups[0].nonfinite) == (1, 1, 2)
    assert rec.groups[0].update_norm == 0.0
    assert rec.grad_norm_before_clip is None  # clipping did not run on the skipped step
    assert rec.scalars()["group0/nonfinite"] == 2.0

    params = leaf_params()
    opt = accumulate_gradients(torch.optim.SGD(params, lr=0.1), 3)
    records = []
    StepDiagnostics(opt, records.append)
    total = [torch.zeros_like(p) for p in params]
    for seed in range(6):
        micro = leaf_params(10 + seed)
        for p, m in zip(params, micro, strict=True):  # what backward() would add into .grad
            p.grad = m.detach().clone() if p.grad is None else p.grad + m.detach()
        total = [t + m.detach() for t, m in zip(total, micro, strict=True)]
        opt.step()
        if opt.last_step_applied:
            close(records[-1].groups[0].grad_norm, norm([t / 3 for t in total]))
            total = [torch.zeros_like(p) for p in params]
        opt.zero_grad()
    assert [r.step for r in records] == [1, 2]


def test_accumulation_micro_steps_are_not_records():
    params = leaf_params()
    opt = accumulate_gradients(torch.optim.SGD(params, lr=0.1), 2)
    records = []
    StepDiagnostics(opt, records.append)
    for seed in range(5):
        set_grads(params, seed)
        opt.step()
    assert [r.step for r in records] == [1, 2]
    assert all(r.applied for r in records)


class InfoSGD(torch.optim.SGD):
    """SGD that publishes per-group ``step_info`` like optimlab's RAdam / AdaBound."""

    def step(self, closure=None):
        loss = super().step(closure)
        self.step_info = [
            {"rectified": True},
            {"lower_bound": 0.09, "upper_bound": 0.11, "lr": "clash"},
        ]
        return loss


def test_step_info_merged_into_group_records():
    params = leaf_params()
    inner = InfoSGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    opt = skip_nonfinite(inner)
    records = []
    StepDiagnostics(opt, records.append)
    set_grads(params)
    opt.step()
    g0, g1 = records[-1].groups
    assert g0.info == {"rectified": True}
    assert g1.info == {"lower_bound": 0.09, "upper_bound": 0.11, "lr": "clash"}
    merged = g1.as_dict()
    assert merged["lower_bound"] == 0.09 and merged["lr"] == 0.1 and merged["info.lr"] == "clash"
    scalars = records[-1].scalars()
    assert scalars["group0/rectified"] == 1.0 and scalars["group1/upper_bound"] == 0.11
    assert "group1/info.lr" not in scalars

    set_grads(params, 2)
    params[0].grad[0, 0] = float("nan")
    opt.step()
    assert records[-1].groups[0].info == {}  # a skipped step has no step_info of its own


def test_optimlab_radam_step_info_if_available():
    try:
        from optimlab.optim import RAdam
    except Exception:  # the optimizers are developed alongside; nothing to check without them
        pytest.skip("optimlab.optim.RAdam not importable")
    params = leaf_params()
    opt = RAdam(params, lr=0.01)
    diag = StepDiagnostics(opt)
    set_grads(params)
    opt.step()
    info = getattr(opt, "step_info", None)
    if not info:
        pytest.skip("RAdam does not publish step_info yet")
    assert diag.last_record.groups[0].info == info[0]


def test_bad_arguments():
    with pytest.raises(TypeError, match="needs a torch.optim.Optimizer"):
        StepDiagnostics([torch.zeros(1)])
    with pytest.raises(ValueError, match="Invalid every value: 0"):
        StepDiagnostics(torch.optim.SGD(leaf_params(), lr=0.1), every=0)


def test_zero_size_and_zero_dim_parameters_through_every_guard():
    params = leaf_params(shapes=((0, 3), (), (2,)))
    opt = EMA(Lookahead(skip_nonfinite(clip_gradients(torch.optim.Adam(params), 1.0)), k=1))
    diag = StepDiagnostics(opt, per_parameter=True)
    set_grads(params)
    before = [p.detach().clone() for p in params]
    opt.step()
    rows = diag.last_record.parameters
    assert rows[0].shape == (0, 3) and rows[0].grad_norm == 0.0 and rows[0].update_norm == 0.0
    assert math.isnan(rows[0].effective_lr_median)
    for row, p, b in zip(rows[1:], params[1:], before[1:], strict=True):
        close(row.update_norm, (p.detach() - b).norm().item())
        close(row.grad_norm, p.grad.norm().item())
    assert diag.last_record.groups[0].nonfinite == 0
