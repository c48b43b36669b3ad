"""Muon beyond the generic tests: torch.optim.Muon's bfloat16 arithmetic engine by engine,
convolution weights, the two momentum forms, and a whole model on Muon and AdamW at once."""

import io

import numpy as np
import pytest
import torch
from torch import nn

import optimlab
from optimlab import reference

SHAPES = ((8, 16), (16, 8), (12, 12), (12, 12), (5, 7))


def _matrices(dtype=torch.float32, shapes=SHAPES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def _feed(params, others, gen):
    for p, q in zip(params, others):
        g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        p.grad, q.grad = g.clone(), g.clone()


@pytest.mark.parametrize("engine", ["loop", "foreach"])
@pytest.mark.parametrize("kwargs", [{}, {"nesterov": False, "adjust_lr_fn": "match_rms_adamw"}])
def test_the_eager_engines_round_as_torch_does_in_bfloat16(engine, kwargs):
    """Newton–Schulz in bfloat16, as torch: the same roundings, so the same bits."""
    ours, theirs = _matrices(), _matrices()
    a = optimlab.Muon(ours, lr=0.02, engine=engine, **kwargs)
    b = torch.optim.Muon(theirs, lr=0.02, **kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(8):
        _feed(ours, theirs, gen)
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        assert torch.equal(p, q)
        assert torch.equal(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"])


def test_the_fused_engine_agrees_with_torch_to_bfloat16s_precision():
    """The fused engine compiles Newton–Schulz (batched over same-shape matrices), so its
    bfloat16 roundings differ from torch's. Each step's update is compared: bfloat16 keeps 8
    significant bits (u ≈ 3.9e-3) and the five quintic steps magnify rounding on
    ill-conditioned matrices to a few percent (1e-2 to 5e-2 measured against float64); the
    other Nesterov setting is more than 0.29 away from the second step on, so 0.1 separates."""
    shapes = ((8, 16), (12, 12), (12, 12))  # a batch of two, and one alone; few compiles
    ours, theirs = _matrices(shapes=shapes), _matrices(shapes=shapes)
    a = optimlab.Muon(ours, lr=0.02, engine="fused")
    b = torch.optim.Muon(theirs, lr=0.02)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        for p, q in zip(ours, theirs):  # start each step from the same θ
            q.data.copy_(p.data)
        before = [p.detach().clone() for p in ours]
        _feed(ours, theirs, gen)
        a.step()
        b.step()
        for p, q, p0 in zip(ours, theirs, before):
            step_ours, step_theirs = p.detach() - p0, q.detach() - p0
            rel = (step_ours - step_theirs).norm() / step_theirs.norm()
            assert rel < 0.1
        for p, q in zip(ours, theirs):  # the momentum is elementwise: float32 rounding only
            torch.testing.assert_close(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"])
    assert a.step_info[0]["engine"] == "fused" and a.step_info[0]["fused"]


@pytest.mark.parametrize("engine", ["loop", "foreach", "fused"])
def test_a_conv_weight_is_orthogonalised_as_its_out_by_rest_matrix(engine):
    """``flatten=True``: a [out, in, kh, kw] weight is the [out, in·kh·kw] matrix (the
    KellerJordan/Muon code), with lr adjusted by that matrix's shape; float64 throughout."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    theta = w.detach().numpy().reshape(4, 27).copy()
    opt = optimlab.Muon(
        [w], lr=0.02, flatten=True, ns_dtype=torch.float64, adjust_lr_fn="original", engine=engine
    )
    state: dict = {}
    for _ in range(3):
        g = torch.randn(w.shape, generator=gen, dtype=torch.float64)
        w.grad = g
        opt.step()
        theta = reference.muon(
            theta, g.numpy().reshape(4, 27), state, lr=0.02, weight_decay=0.1, momentum=0.95,
            nesterov=True, ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5,
            adjust_lr_fn="original", momentum_form="ema", weight_decay_mode="decoupled",
            initial_lr=0.02,
        )  # fmt: skip
    np.testing.assert_allclose(w.detach().numpy().reshape(4, 27), theta, rtol=1e-12, atol=1e-14)
    assert opt.state[w]["momentum_buffer"].shape == w.shape  # state keeps the weight's shape


def test_without_flatten_a_conv_weight_gets_torchs_error():
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        optimlab.Muon([nn.Conv2d(2, 2, 3).weight])


def test_sum_and_ema_momentum_give_the_same_parameters():
    """b_sum = b_ema/(1 − μ) at every step, and Newton–Schulz normalises its input, so the two
    forms move θ identically (up to eps); their buffers differ by 1/(1 − μ)."""
    runs = {}
    for form in ("ema", "sum"):
        ps = _matrices(torch.float64)
        opt = optimlab.Muon(ps, lr=0.02, momentum_form=form, ns_dtype=torch.float64)
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            opt.step()
        runs[form] = (ps, opt)
    (pe, oe), (ps_, os_) = runs["ema"], runs["sum"]
    for a, b in zip(pe, ps_):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            os_.state[b]["momentum_buffer"] * (1 - 0.95), oe.state[a]["momentum_buffer"]
        )


class _TinyGPT(nn.Module):
    """Embedding, two hidden linear layers, a norm and a head: Muon's and AdamW's parts."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 11)

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.norm(h + self.fc2(torch.relu(self.fc1(h)))))


def _loss(model, step):
    gen = torch.Generator().manual_seed(step)
    x = torch.randint(0, 11, (4, 6), generator=gen)
    return nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(1, 1).flatten())


def _train(model, opt, steps, start=0):
    for step in range(start, start + steps):
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()


@pytest.mark.parametrize("engine", ["loop", "foreach", "fused"])
def test_a_whole_model_is_muon_on_hidden_matrices_and_adamw_on_the_rest(engine):
    """``Muon.for_model`` equals torch.optim.Muon on fc1/fc2's weights plus torch.optim.AdamW
    on everything else, with Keller Jordan's settings (float64 Newton–Schulz for exactness)."""
    torch.manual_seed(0)
    ours = _TinyGPT().double()
    theirs = _TinyGPT().double()
    theirs.load_state_dict(ours.state_dict())
    opt = optimlab.Muon.for_model(
        ours,
        muon={"lr": 0.02, "adjust_lr_fn": None, "weight_decay": 0.01},
        adamw={"lr": 3e-3, "betas": (0.9, 0.95), "weight_decay": 0.0},
        ns_dtype=torch.float64,
        engine=engine,
    )
    hidden = [theirs.fc1.weight, theirs.fc2.weight]
    rest = [p for p in theirs.parameters() if all(p is not h for h in hidden)]
    twin_muon = torch.optim.Muon(hidden, lr=0.02, weight_decay=0.01)
    twin_adamw = torch.optim.AdamW(rest, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    # torch's Muon runs Newton-Schulz in bfloat16; hand it float64 for an exact comparison
    import torch.optim._muon as torch_muon

    original = torch_muon._zeropower_via_newtonschulz
    try:
        torch_muon._zeropower_via_newtonschulz = _float64_ns
        for step in range(6):
            _train(ours, opt, 1, step)
            twin_muon.zero_grad()
            twin_adamw.zero_grad()
            _loss(theirs, step).backward()
            twin_muon.step()
            twin_adamw.step()
    finally:
        torch_muon._zeropower_via_newtonschulz = original
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    assert [g["use_muon"] for g in opt.param_groups] == [True, False]


def _float64_ns(grad, ns_coefficients, ns_steps, eps):
    """torch's Newton–Schulz with its bfloat16 cast replaced by float64."""
    a, b, c = ns_coefficients
    x = grad.double()
    tall = x.size(0) > x.size(1)
    x = x.T if tall else x
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_a_whole_model_resumes_bit_exactly_from_its_state_dict(engine):
    """One optimizer object saves and loads both parts: a run stopped after 3 steps and
    resumed in a fresh model and optimizer ends where the uninterrupted run does."""

    def make(model):
        return optimlab.Muon.for_model(model, lr=3e-3, weight_decay=0.1, engine=engine)

    torch.manual_seed(0)
    straight = _TinyGPT()
    stopped = _TinyGPT()
    stopped.load_state_dict(straight.state_dict())
    opt = make(straight)
    _train(straight, opt, 6)
    first = make(stopped)
    _train(stopped, first, 3)
    buffer = io.BytesIO()
    torch.save({"model": stopped.state_dict(), "opt": first.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = _TinyGPT()
    resumed.load_state_dict(saved["model"])
    second = make(resumed)
    second.load_state_dict(saved["opt"])
    kinds = {k for s in saved["opt"]["state"].values() for k in s}
    assert kinds == {"momentum_buffer", "step", "exp_avg", "exp_avg_sq"}
    _train(resumed, second, 3, start=3)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_param_groups_for_splits_embeddings_norms_and_the_head_off():
    model = _TinyGPT()
    muon, adamw = optimlab.Muon.param_groups_for(model)
    assert muon["params"] == [model.fc1.weight, model.fc2.weight]
    assert muon["adjust_lr_fn"] == "match_rms_adamw" and muon["flatten"]
    others = {id(p) for p in adamw["params"]}
    assert id(model.embed.weight) in others and id(model.head.weight) in others
    assert len(others) == len(list(model.parameters())) - 2
    tied = _TinyGPT()
    tied.head.weight = tied.embed.weight  # a tied output head stays with the embedding
    groups = optimlab.Muon.param_groups_for(tied, head=tied.fc2)
    assert groups[0]["params"] == [tied.fc1.weight]
