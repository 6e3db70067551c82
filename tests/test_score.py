import math

import pytest
import torch

from engine.search.hamming import KernelAccumulator, hamming_kernel, sahd_score


def direct_kernel(codes):
    """The reference formula written out entry by entry, in float64."""
    x = codes.double()
    b, n = x.shape
    s = x.sum(1) / n
    k = torch.empty(b, b, dtype=torch.float64)
    for i in range(b):
        for j in range(b):
            d = (x[i] != x[j]).sum()
            k[i, j] = n - 0.5 * d / (n * (s[i] * (1 - s[j]) + (1 - s[i]) * s[j]) + 1e-3)
    return k


def test_kernel_by_hand():
    codes = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    off = 4 - 1 / 2.001  # every pair differs in 2 of 4 positions; both denominators are 2.001
    expected = torch.tensor([[4, off, off], [off, 4, off], [off, off, 4]], dtype=torch.float64)
    torch.testing.assert_close(hamming_kernel(codes), expected)
    torch.testing.assert_close(direct_kernel(codes), expected)


def test_one_matmul_form_equals_the_direct_formula():
    g = torch.Generator().manual_seed(0)
    for b, n, p in [(5, 7, 0.5), (16, 300, 0.05), (8, 1000, 0.9)]:
        codes = (torch.rand(b, n, generator=g) < p).float()
        torch.testing.assert_close(hamming_kernel(codes), direct_kernel(codes), rtol=0, atol=1e-9)


def test_score_is_log_abs_det_of_the_averaged_kernel():
    g = torch.Generator().manual_seed(1)
    calls = [(torch.rand(6, n, generator=g) < 0.3).float() for n in (10, 40, 40, 25)]
    mean_k = sum(direct_kernel(c) for c in calls) / len(calls)
    assert sahd_score(calls) == pytest.approx(torch.linalg.slogdet(mean_k)[1].item(), rel=1e-12)


def test_accumulator_weights_calls_and_skips_silent_ones_on_request():
    g = torch.Generator().manual_seed(2)
    spikes = (torch.rand(3, 4, 2, 5, 5, generator=g) < 0.2).float()  # T=3, B=4, 50 neurons
    spikes[1] = 0  # a silent timestep
    twice = KernelAccumulator()
    twice.add(spikes, weight=2)
    listed = [spikes[t].flatten(1) for t in range(3)] * 2
    assert twice.calls == 6 and twice.score() == pytest.approx(sahd_score(listed), rel=1e-12)

    quiet = KernelAccumulator(count_silent=False)
    counts = quiet.add(spikes)
    assert counts.tolist() == [float(spikes[t].sum()) for t in range(3)]
    assert quiet.calls == 2
    assert quiet.score() == pytest.approx(sahd_score([spikes[0].flatten(1), spikes[2].flatten(1)]), rel=1e-12)


def test_channels_last_layout_gives_the_same_kernel():
    g = torch.Generator().manual_seed(3)
    spikes = (torch.rand(2, 4, 3, 6, 6, generator=g) < 0.3).float()
    cl = spikes.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (2, 4))
    a, b = KernelAccumulator(), KernelAccumulator()
    a.add(spikes)
    b.add(cl)
    torch.testing.assert_close(a.total, b.total)


def test_nothing_counted_scores_minus_infinity():
    acc = KernelAccumulator(count_silent=False)
    acc.add(torch.zeros(2, 3, 10))
    assert acc.score() == -math.inf
    with pytest.raises(ValueError, match="at least one code tensor"):
        sahd_score([])
