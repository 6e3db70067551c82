import gc
import math
import weakref

import pytest
import snntorch
import torch
from snntorch import surrogate

from engine.nn import fused
from engine.nn.layers import to_channels_last
from engine.nn.neuron import LIF, ATan, atan_grad, lif_step


def away_from_threshold(shape, seed=0):
    """Random inputs; tests that compare with snntorch check that no membrane lands on the threshold."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 1.5 + 0.6
    return x


def snntorch_reference(x):
    """snntorch's Leaky with the reference's constants, fed 0.75 X. Returns (spikes, membranes)."""
    leaky = snntorch.Leaky(beta=0.25, threshold=1.0, reset_mechanism="zero", spike_grad=surrogate.atan(2.0))
    mem = leaky.init_leaky()
    spikes, mems = [], []
    for x_t in x.unbind(0):
        spk, mem = leaky(0.75 * x_t, mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def test_lif_matches_snntorch_spikes_and_gradients():
    x1 = away_from_threshold((5, 64, 32), seed=1).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    ours = LIF()(x1)
    theirs, mems = snntorch_reference(x2)
    assert (mems - 1.0).abs().min() > 1e-4  # the comparison is only meaningful away from the threshold
    assert ours.sum() > 0 and torch.equal(ours, theirs)
    weights = torch.randn_like(ours)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    assert x1.grad.abs().sum() > 0


def test_fires_at_threshold_inclusive_and_resets_to_zero():
    # V = 0.75 X: X = 4/3 gives exactly V = 1.0, which fires (>=), then V restarts from 0.
    x = torch.tensor([[4 / 3], [4 / 3], [0.0]])
    spikes = LIF()(x.view(3, 1, 1))
    assert spikes.flatten().tolist() == [1.0, 1.0, 0.0]
    s, v = lif_step(torch.tensor([0.5]), torch.tensor([0.0]), tau=4 / 3, v_th=1.0, alpha=2.0)
    assert s.item() == 0 and v.item() == pytest.approx(0.375)


def test_sequence_function_equals_autograd_of_the_step_function():
    """LIFSequence's hand-written backward against autograd through ``lif_step`` (and the same spikes)."""
    x1 = away_from_threshold((5, 8, 4, 6, 6), seed=2).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    fast = LIF()(x1)
    v, steps = torch.zeros_like(x2[0]), []
    for x_t in x2.unbind(0):
        s, v = lif_step(x_t, v, tau=4 / 3, v_th=1.0, alpha=2.0)
        steps.append(s)
    slow = torch.stack(steps)
    assert torch.equal(fast, slow)
    weights = torch.randn_like(fast)
    (fast * weights).sum().backward()
    (slow * weights).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        assert torch.equal(LIF()(x1), fast)


def test_state_is_reset_per_call_unless_carried():
    lif = LIF()
    x = torch.full((2, 1, 3), 0.9)  # V: 0.675, 1.18 -> fires at t=1
    first, second = lif(x), lif(x)
    assert torch.equal(first, second)
    step = torch.full((1, 1, 3), 1.2)  # from rest V = 0.9: no spike
    assert lif(step).sum() == 0 and lif(step).sum() == 0
    lif.carry = True
    lif(step)
    assert lif(step).sum() == 3  # 0.9 carried over reaches 1.125 and fires


def test_surrogate_backward_matches_autograd_of_its_primitive():
    x = torch.linspace(-2, 2, 101, requires_grad=True)
    ATan.apply(x, 2.0).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    (torch.atan(math.pi / 2 * 2.0 * x2) / math.pi + 0.5).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(atan_grad(torch.tensor(0.0), 2.0), torch.tensor(1.0))


def test_neurons_do_not_outlive_their_network():
    refs = []
    for _ in range(50):
        net = torch.nn.Sequential(LIF(), LIF())
        net(torch.rand(3, 2, 4))
        refs.append(weakref.ref(net[0]))
        del net
    gc.collect()
    assert all(r() is None for r in refs)


def lif_with_grad(x, weights, mode, monkeypatch):
    monkeypatch.setattr(fused, "MODE", mode)
    x = x.detach().clone().requires_grad_()
    out = LIF()(x)
    (out * weights).sum().backward()
    return out, x.grad


@pytest.mark.parametrize("layout", ["channels_last", "sequence"])
def test_fused_kernels_match_the_eager_reference(layout, monkeypatch):
    shape = (5, 4, 3, 6, 6) if layout == "channels_last" else (5, 8, 40)
    x = away_from_threshold(shape, seed=4)
    if layout == "channels_last":
        x = to_channels_last(x)
    weights = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    fused_out, fused_grad = lif_with_grad(x, weights, "fused", monkeypatch)
    eager_out, eager_grad = lif_with_grad(x, weights, "eager", monkeypatch)
    assert fused._failure is None and fused._forward in fused._compiled and fused._backward in fused._compiled
    assert torch.equal(fused_out, eager_out) and fused_out.sum() > 0
    torch.testing.assert_close(fused_grad, eager_grad, rtol=1e-6, atol=1e-7)
    assert fused_out.stride() == x.stride() and fused_grad.stride() == x.stride()  # layout kept


def test_a_failing_compiler_falls_back_to_the_eager_kernels(monkeypatch):
    def broken(*_args):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(fused, "_compiled", {fused._forward: broken, fused._backward: broken})
    monkeypatch.setattr(fused, "_failure", None)
    x = away_from_threshold((5, 6, 10), seed=6)
    weights = torch.randn(5, 6, 10)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        out, grad = lif_with_grad(x, weights, "fused", monkeypatch)
    assert fused._failure == "RuntimeError: no C++ compiler found"
    eager_out, eager_grad = lif_with_grad(x, weights, "eager", monkeypatch)
    assert torch.equal(out, eager_out) and torch.equal(grad, eager_grad)


def test_a_compiler_failing_between_forward_and_backward_still_gives_the_eager_gradient(monkeypatch):
    """The fused forward saves the input, not the membranes; the eager backward then recomputes them."""
    monkeypatch.setattr(fused, "MODE", "fused")
    monkeypatch.setattr(fused, "_failure", None)
    x = away_from_threshold((5, 6, 10), seed=7)
    weights = torch.randn(5, 6, 10, generator=torch.Generator().manual_seed(8))
    fused_x = x.clone().requires_grad_()
    out = LIF()(fused_x)

    def broken(*_args):
        raise RuntimeError("compiler gone")

    monkeypatch.setitem(fused._compiled, fused._backward, broken)
    with pytest.warns(RuntimeWarning, match="compiler gone"):
        (out * weights).sum().backward()
    eager_out, eager_grad = lif_with_grad(x, weights, "eager", monkeypatch)
    assert torch.equal(out, eager_out) and torch.equal(fused_x.grad, eager_grad)


def test_fused_kernels_serve_many_sizes_in_one_process(monkeypatch):
    """A worker meets many layer sizes, timestep counts and thresholds: each threshold and T is a graph of its
    own, more than Dynamo's default limit of 8, which must not turn the fused kernels off. Dynamo would fall back
    to eager code silently at its limit; made to fail there, a limit too low shows as a failure."""
    monkeypatch.setattr(fused, "MODE", "fused")
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    for i in range(12):
        x = away_from_threshold((3 + i % 3, 1 + i, 7), seed=i).requires_grad_()
        out = LIF(v_th=1.0 + i / 100)(x)
        out.sum().backward()
        assert fused._failure is None, fused._failure
        assert x.grad is not None and out.shape == x.shape
