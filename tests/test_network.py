import pytest
import torch
from helpers import CIFAR10, CIFAR100, TINY

from engine.core.footprint import footprint, layer_counts
from engine.core.profiles import PROFILES, get_profile
from engine.core.space import SPIKENAS, TABLE_I, Genotype, KernelSet
from engine.nn import fused
from engine.nn.layers import SeqAvgPool2d, SeqBatchNorm2d, to_channels_last
from engine.nn.network import SpikingNet, build_network, trainable_parameters
from engine.nn.neuron import recording

LAPTOP = get_profile("laptop")
# Cells that between them use every op on every edge position.
CELLS = [
    "0302 0030 0003 0000",
    "0111 0011 0001 0000",
    "0222 0022 0002 0000",
    "0333 0033 0003 0000",
    "0444 0044 0004 0000",
    "0241 0013 0002 0000",
    "0001 0000 0000 0000",
]


def count_on_meta(genotype, kernel_set, profile, shape):
    with torch.device("meta"):
        return trainable_parameters(SpikingNet(genotype, kernel_set, profile, shape))


def test_paper_profile_reproduces_snasnet_cifar100_size():
    g = Genotype.from_str("0302 0030 0003 0000")
    net = build_network(g, KernelSet(1, 3), get_profile("paper"), CIFAR100)
    assert trainable_parameters(net) == 19_886_452
    assert footprint(g, KernelSet(1, 3), get_profile("paper"), CIFAR100).params_torch == 19_886_452


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("shape", [CIFAR10, CIFAR100, TINY], ids=["cifar10", "cifar100", "tiny"])
def test_counted_parameters_equal_the_built_network(profile, shape):
    for ks in [*TABLE_I, KernelSet(5, 9), KernelSet(1, 11), KernelSet(1, 3, 5)]:
        for text in CELLS:
            g = Genotype.from_str(text)
            fp = footprint(g, ks, PROFILES[profile], shape)
            assert fp.params_torch == count_on_meta(g, ks, PROFILES[profile], shape), (profile, ks, text)
            bn = sum(layer.norm for layer in layer_counts(g, ks, PROFILES[profile], shape))
            assert fp.params == fp.params_torch - bn
            assert fp.bytes(32) == 4 * fp.params and fp.bytes(8) == fp.params


@pytest.mark.parametrize("shape", [CIFAR10, CIFAR100, TINY], ids=["cifar10", "cifar100", "tiny"])
def test_embedded_profile_stays_under_ten_million(shape):
    for ks in TABLE_I:
        assert footprint(ks.extremes()[1], ks, get_profile("embedded"), shape).params < 10_000_000


def test_zeroize_edges_build_nothing():
    net = build_network(Genotype.from_str("0302 0030 0003 0000"), KernelSet(3, 5), LAPTOP, CIFAR10)
    assert sorted(net.cell1.ops) == ["01", "03", "12", "23"]
    # Node 0 feeds two conv edges: one neuron computes their shared input spikes.
    assert {k: m.fanout for k, m in net.cell1.fire.items()} == {"0": 2, "1": 1, "2": 1}


@pytest.mark.parametrize("ks", TABLE_I, ids=str)
def test_forward_and_backward_for_every_kernel_set(ks):
    net = build_network(Genotype.from_str("0231 0024 0003 0000"), ks, LAPTOP, CIFAR10)
    x = torch.rand(LAPTOP.timesteps, 4, 3, 32, 32).bernoulli()
    out = net(x)
    assert out.shape == (4, 10)
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    # The surrogate carries gradient back through neurons that did not fire, down to the stem.
    assert all(p.grad is not None for p in net.parameters())
    assert net.stem[0].weight.grad.abs().sum() > 0 and net.cell1.ops["01"][0].weight.grad.abs().sum() > 0


def test_tiny_imagenet_stem_halves_the_input():
    net = build_network(Genotype.from_str("0302 0030 0003 0000"), KernelSet(1, 3), LAPTOP, TINY)
    assert net(torch.rand(LAPTOP.timesteps, 2, 3, 64, 64).bernoulli()).shape == (2, 200)


def test_static_input_equals_the_same_frame_every_timestep():
    torch.manual_seed(0)
    net = build_network(Genotype.from_str("0302 0030 0003 0000"), KernelSet(1, 3), LAPTOP, CIFAR10).eval()
    x = torch.randn(1, 3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x.expand(LAPTOP.timesteps, -1, -1, -1, -1)))


@pytest.mark.parametrize("k", [2, 4])
def test_tiled_pooling_has_atens_gradient_in_the_inputs_layout(k):
    x = to_channels_last(torch.randn(3, 4, 5, 8, 8)).requires_grad_()
    ref = x.detach().clone().requires_grad_()
    out = SeqAvgPool2d(k)(x)
    assert "TiledAvgPool2d" in type(out.grad_fn.next_functions[0][0]).__name__
    expected = torch.nn.AvgPool2d(k)(ref.flatten(0, 1)).unflatten(0, ref.shape[:2])
    g = torch.randn_like(expected).contiguous()  # a gradient in another layout than the input's
    out.backward(g)
    expected.backward(g)
    assert torch.equal(out, expected) and torch.equal(x.grad, ref.grad)
    assert x.grad.stride() == x.stride()


@pytest.mark.parametrize(
    ("layout", "kernels"), [("contiguous", "auto"), ("channels_last", "eager"), ("channels_last", "fused")]
)
def test_batch_norm_uses_per_timestep_statistics_in_training(layout, kernels, monkeypatch):
    """Forward, running statistics and gradients against float64 ``nn.BatchNorm2d`` stepped, with ATen's
    kernels per timestep (eager) and the fused backward."""
    monkeypatch.setattr(fused, "MODE", kernels)
    monkeypatch.setattr(fused, "_compiled", {})  # to see which kernels ran
    bn, ref = SeqBatchNorm2d(4), torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        ref.weight.copy_(bn.weight)
        bn.bias.fill_(0.3), ref.bias.fill_(0.3)
    x = torch.randn(3, 8, 4, 5, 5) * torch.arange(1, 4).view(3, 1, 1, 1, 1) + 2
    if layout == "channels_last":
        x = to_channels_last(x)
    x.requires_grad_()
    x64 = x.detach().double().requires_grad_()
    expected = torch.stack([ref.double()(x_t) for x_t in x64])
    out = bn(x)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_mean.double(), ref.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), ref.running_var, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 3
    g = torch.randn_like(expected)
    out.backward(g.float())
    expected.backward(g)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.weight.grad.double(), ref.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.bias.grad.double(), ref.bias.grad, rtol=1e-4, atol=1e-5)
    assert x.grad.stride() == x.stride()
    assert fused._failure is None and (fused._batch_norm_backward in fused._compiled) == (kernels == "fused")


# Raw SpikeNAS-Bench cells: unfed nodes, dead ends, no 0->3 edge, every threshold.
RAW_CELLS = [
    "0000 0000 0000 0000",
    "0200 0030 0000 0000",
    "0043 0020 0004 0000",
    "0234 0034 0002 0000",
    "0444 0044 0004 0000",
    "0012 0000 0003 0000",
]


@pytest.mark.parametrize("profile", ["laptop", "benchmark"])
def test_raw_cells_count_and_build_every_edge(profile):
    for text in RAW_CELLS:
        g = SPIKENAS.genotype(text)
        assert g.ops == Genotype.from_str(text).ops  # never pruned
        fp = footprint(g, SPIKENAS, PROFILES[profile], CIFAR10)
        assert fp.params_torch == count_on_meta(g, SPIKENAS, PROFILES[profile], CIFAR10), text
    # SpikeNAS-Bench's published counts: 17,179,620 plus 738,048 per convolution edge (ids 0 and 14067)
    bench = get_profile("benchmark")
    assert footprint(SPIKENAS.genotype("0000 0000 0000 0000"), SPIKENAS, bench, CIFAR10).params_torch == 17_179_620
    assert footprint(SPIKENAS.genotype("0232 0022 0004 0000"), SPIKENAS, bench, CIFAR10).params_torch == 21_607_908


def test_raw_cells_fire_once_per_node_and_threshold():
    net = build_network(SPIKENAS.genotype("0234 0034 0002 0000"), SPIKENAS, LAPTOP, CIFAR10)
    fire = {k: (m.v_th, m.fanout) for k, m in net.cell1.fire.items()}
    assert fire == {
        "0at0p5": (0.5, 1),
        "0": (1.0, 1),
        "0at1p5": (1.5, 1),
        "1": (1.0, 1),
        "1at1p5": (1.5, 1),
        "2at0p5": (0.5, 1),
    }
    # A node nothing feeds holds zeros: its neurons never fire, the cell still runs forward and backward.
    net = build_network(SPIKENAS.genotype("0012 0000 0003 0000"), SPIKENAS, LAPTOP, CIFAR10)
    x = torch.rand(LAPTOP.timesteps, 2, 3, 32, 32).bernoulli()
    net(x).sum().backward()
    zero = build_network(SPIKENAS.genotype("0000 0000 0000 0000"), SPIKENAS, LAPTOP, CIFAR10)
    assert zero.cell1(torch.ones(5, 2, 16, 8, 8)).abs().sum() == 0


def test_a_higher_threshold_fires_less():
    torch.manual_seed(0)
    x = torch.rand(LAPTOP.timesteps, 4, 3, 32, 32).bernoulli()
    rates = {}
    for code, th in ((2, 0.5), (3, 1.0), (4, 1.5)):
        torch.manual_seed(1)
        g = Genotype((code, 0, 0, 1, 0, 1))  # 0->1 conv of this threshold; 0->3 and 1->2->3 ... skip
        net = build_network(g, SPIKENAS, LAPTOP, CIFAR10)
        lif = net.cell1.fire["0" if th == 1.0 else f"0at{th:g}".replace(".", "p")]
        fired = []
        with recording([lif], lambda layer, codes, spikes: fired.append(codes.float().mean().item())):
            net(x)
        rates[th] = fired[0]
    assert rates[0.5] > rates[1.0] > rates[1.5]
