"""Deploy: the NIR graph read back into snntorch equals the engine, integer weights round-trip, energy counts."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from helpers import EVERY_OP, cli, make_model, one_line_error
from torch import nn

from engine import deploy
from engine.core import EnergyModel
from engine.core.profiles import get_profile
from engine.core.space import Genotype, KernelSet
from engine.data.images import load_dataset
from engine.deploy.exports import _Tensors
from engine.nn.network import build_network
from engine.train import quantize
from engine.train.checkpoint import CheckpointError, LoadedModel, load_model
from engine.train.training import DeviceImages, evaluate

LAPTOP = get_profile("laptop")
# SNASNet's cell (two zeroize edges) on a custom kernel set.
CUSTOM = ("0302 0030 0003 0000", "1x1_9x9")
# A set of three sizes (op 5 is its pool), and SpikeNAS-Bench's space: LIFs of thresholds 0.5, 1.0 and 1.5.
THREE_SIZES = ("0245 0053 0004 0000", "1x1_3x3_5x5")
SPIKENAS_CELL = ("0234 0034 0002 0000", "spikenas")


@pytest.fixture(scope="module")
def test_images(sample):
    images, _ = sample.test.tensors()
    return images[:4].float() / 255


@pytest.mark.parametrize(
    "genotype, kernel_set",
    [EVERY_OP, CUSTOM, THREE_SIZES, SPIKENAS_CELL],
    ids=["every-op", "custom-kernels", "three-sizes", "spikenas"],
)
def test_nir_read_back_into_snntorch_equals_the_engine(sample, test_images, tmp_path, genotype, kernel_set):
    loaded = make_model(tmp_path / "m.safetensors", sample.info, genotype, kernel_set)
    # float64: folding BatchNorm and reordering the node sums move membranes by ~1e-16, so every spike of
    # every LIF layer at every timestep must be equal, and so must the scores.
    exact = deploy.check_nir(loaded, test_images, dtype=torch.float64)
    lifs = 2 * sum(1 for _ in loaded.model.cell1.fire) + 3
    assert len(exact.layers) == lifs
    assert all(n > 0 for n in exact.fired.values()), exact.fired  # every layer fires: nothing is vacuous
    assert exact.spikes_equal, exact.layers
    assert exact.ok and exact.max_score_difference < 1e-9

    # The file as written (float32) and read back from disk: the same decisions; a spike may differ only
    # where float32 rounding of the folded weights (~1e-7) moved a membrane across the threshold.
    out = deploy.write_nir(loaded, tmp_path / "m.nir")
    graph = deploy.read_nir(out)
    assert graph.metadata["timesteps"] == 5 and graph.metadata["encoding"] == "rate"
    assert graph.metadata["dt"] == deploy.DT and graph.metadata["group"] == loaded.model.group
    assert json.loads(graph.metadata["classes"]) == list(sample.info.classes)
    lif = graph.nodes["head.lif2"]
    assert np.allclose(lif.tau, 4 / 3 * deploy.DT) and np.all(lif.v_threshold == 1) and np.all(lif.v_reset == 0)
    stored = deploy.check_nir(loaded, test_images, graph=graph, dtype=torch.float32)
    assert stored.ok
    for node, (differ, total) in stored.layers.items():
        assert differ <= total * 1e-4, (node, differ, total)


def test_cell_sums_become_edges_and_a_repeated_source_is_folded(sample, test_images, tmp_path):
    """x1 = skip(x0), x3 = skip(x0) + skip(x1) = 2 x0: the stem reaches down's LIF once, with 2 and down's
    BatchNorm folded into its weights; cell 2's input (down's pool, no weights to fold into) reaches the head's
    LIF through a 1x1 convolution carrying 2 and the head's BatchNorm. Only plain nodes: no Scale, no
    AvgPool2d, every LIF with r = 1 and v_leak = 0. Also direct encoding: the analog image at every timestep."""
    import nir

    base = make_model(tmp_path / "m.safetensors", sample.info, "0101 0001 0000 0000", "1x1_3x3")
    direct = LoadedModel(
        base.model, base.meta, base.genotype, base.kernel_set, dataclasses.replace(LAPTOP, encoding="direct"), base.data
    )
    graph = deploy.to_nir(direct, dtype=np.float64)
    kinds = {type(n) for n in graph.nodes.values()}
    assert kinds <= {nir.Input, nir.Output, nir.Conv2d, nir.SumPool2d, nir.Flatten, nir.Linear, nir.Affine, nir.LIF}
    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):
            assert np.all(node.r == 1) and np.all(node.v_leak == 0) and np.all(node.v_reset == 0)
    assert ("stem", "down.lif") in graph.edges
    net = base.model
    a_stem, b_stem = deploy.nir._bn_affine(net.stem[1])
    a_down, b_down = deploy.nir._bn_affine(net.down[0])
    stem = graph.nodes["stem"]
    expected = net.stem[0].weight.detach().double().numpy() * (a_stem * 2 * a_down)[:, None, None, None]
    assert np.allclose(stem.weight, expected, rtol=1e-12, atol=0)
    assert np.allclose(stem.bias, b_stem * 2 * a_down + b_down, rtol=1e-12, atol=1e-15)
    carrier = "down.pool.to.head.lif"
    assert ("down.pool", carrier) in graph.edges and (carrier, "head.lif") in graph.edges
    a_head, b_head = deploy.nir._bn_affine(net.head[0])
    assert np.allclose(graph.nodes[carrier].weight[:, :, 0, 0], np.diag(2 * a_head)) and np.allclose(
        graph.nodes[carrier].bias, b_head
    )
    assert graph.metadata["encoding"] == "direct"
    report = deploy.check_nir(direct, test_images, dtype=torch.float64)
    assert report.spikes_equal and report.ok, report.summary()


@pytest.mark.parametrize("include_pad", [False, True], ids=["padding-not-counted", "padding-counted"])
def test_the_cells_average_pool_becomes_exact_convolutions(include_pad):
    """At a border the pool divides by the pixels its window covers (4, 6 or 9 for 3x3): the convolutions it
    becomes do the same, on every map size from 1 pixel up."""
    import nir

    from engine.deploy.nir import _Builder

    gen = torch.Generator().manual_seed(0)
    for h, w in ((1, 1), (1, 2), (2, 2), (3, 5), (4, 4), (7, 3), (16, 16)):
        g = _Builder()
        g.add("input", nir.Input(input_type=np.array([3, h, w])), (3, h, w))
        pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=include_pad)
        out = g.cell_pool("pool", pool, {"input": np.ones(3)})
        g.finish(np.float64)
        values = {"input": torch.rand(2, 3, h, w, generator=gen, dtype=torch.float64) - 0.5}
        for src, dst in g.edges:  # in order of creation: a chain
            node = g.nodes[dst]
            weight = torch.from_numpy(node.weight)
            bias = torch.from_numpy(node.bias)
            values[dst] = nn.functional.conv2d(values[src], weight, bias, node.stride, node.padding)
        assert all(type(n) is nir.Conv2d and n.groups == 1 for k, n in g.nodes.items() if k != "input")
        assert len(g.nodes) == (2 if include_pad else 6)
        expected = pool(values["input"])
        assert float((values[out] - expected).abs().max()) < 1e-14, (h, w)


def test_to_snntorch_is_a_trainable_snntorch_module(sample, test_images, tmp_path):
    import snntorch

    loaded = make_model(tmp_path / "m.safetensors", sample.info, *EVERY_OP)
    net = deploy.to_snntorch(loaded)
    assert any(isinstance(m, snntorch.Leaky) for m in net.modules())
    x = torch.bernoulli(test_images.unsqueeze(0).expand(5, *test_images.shape))
    loss = nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)  # the surrogate carries gradients back


def test_quantised_weights_within_one_step_and_the_file_reproduces_the_stored_accuracy(studio, tmp_path):
    data = load_dataset(studio["mini"])
    loaded = make_model(tmp_path / "m.safetensors", data.info, *EVERY_OP)
    images = DeviceImages(data.test, torch.device("cpu"))
    for bits in quantize.QUANT_BITS:
        for name, w in loaded.model.named_parameters():
            if name in quantize.quantized_weights(loaded.model):
                q, scale = quantize.quantize_tensor(w, bits)
                assert int(q.abs().max()) <= 2 ** (bits - 1) - 1
                step = scale.view(-1, *[1] * (w.dim() - 1))
                assert bool(((quantize.dequantize_tensor(q, scale) - w).abs() <= step / 2 + 1e-12).all())
        accuracy = deploy.measure_quantized(loaded, bits)
        out = deploy.export(loaded, f"int{bits}", tmp_path / f"m-int{bits}.safetensors")
        reloaded = load_model(out)
        assert reloaded.meta["accuracy"] == accuracy and reloaded.meta["quantization"]["bits"] == bits
        again, _ = evaluate(reloaded.model, images, data, reloaded.profile, seed=reloaded.meta["eval_seed"])
        assert again == accuracy
    # 4 bits changes the weights more than 8 bits does
    w = loaded.model.stem[0].weight.detach()
    err = {b: float((quantize.dequantize_tensor(*quantize.quantize_tensor(w, b)) - w).abs().max()) for b in (8, 4)}
    assert 0 < err[8] < err[4]


def test_a_tampered_or_malformed_integer_file_is_refused(sample, tmp_path):
    loaded = make_model(tmp_path / "m.safetensors", sample.info, *CUSTOM)
    out = deploy.write_quantized(loaded, 8, tmp_path / "q.safetensors", accuracy=0.5)
    data = bytearray(out.read_bytes())
    data[-3] ^= 0xFF  # a weight byte
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="modified"):
        load_model(bad)
    # integers outside the declared width, correctly checksummed: refused by the dequantiser
    from engine.train.checkpoint import _open, save_model

    tensors = {k: v.clone() for k, v in _open(out)[1].items()}
    name = next(k for k in tensors if k.endswith(".q"))
    tensors[name][0].fill_(127)
    meta = {**load_model(out).meta, "quantization": {**load_model(out).meta["quantization"], "bits": 4}}
    save_model(tmp_path / "wide.safetensors", _Tensors(tensors), meta)
    with pytest.raises(CheckpointError, match="outside 4-bit range"):
        load_model(tmp_path / "wide.safetensors")


def test_synaptic_ops_of_a_network_whose_spikes_are_known(sample):
    """Every BatchNorm outputs 2 (weight 0, bias 2) and the first linear layer outputs 2, so every LIF fires
    at every timestep, and a white image spikes at every pixel: the counts follow in closed form."""
    g, ks = Genotype.from_str(EVERY_OP[0]), KernelSet.parse(EVERY_OP[1])
    net = build_network(g, ks, LAPTOP, sample.info).eval()
    macro = LAPTOP.macro(sample.info.macro)
    c, hidden, outputs, T = macro.channels, macro.hidden, sample.info.num_classes * macro.group, LAPTOP.timesteps
    features = 2 * c * (16 // macro.pool) ** 2
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.zero_()
                m.bias.fill_(2.0)
        net.head[5].weight.fill_(2.0 / features)

    class White:
        def tensors(self):
            return torch.full((3, 3, 32, 32), 255, dtype=torch.uint8), torch.zeros(3, dtype=torch.long)

    counts = deploy.count_ops(net, DeviceImages(White(), torch.device("cpu")), sample, LAPTOP, seed=0)
    assert all(f["firing_rate"] == 1.0 for f in counts.firing), counts.firing

    def reach(n: int, k: int) -> int:  # inputs an all-ones k x k "same" convolution reads, summed over one axis
        p = k // 2
        return n * k - p * (p + 1)

    def conv(n: int, k: int, c_in: int, c_out: int) -> int:
        return reach(n, k) ** 2 * c_in * c_out

    per_step = (
        conv(32, 3, 3, c)  # stem
        + 2 * conv(32, 3, c, c)
        + conv(32, 5, c, c)  # cell1: two 3x3 convs, one 5x5
        + conv(32, 3, c, 2 * c)  # down
        + 2 * conv(16, 3, 2 * c, 2 * c)
        + conv(16, 5, 2 * c, 2 * c)  # cell2
        + 2 * c * 16 * 16 * hidden  # every head spike reaches every hidden unit through the pool
        + hidden * outputs
    )
    assert counts.acs == T * per_step
    assert counts.macs == 0  # rate encoding: even the stem is fed by spikes
    ann = (
        32 * 32 * (3 * c * 9 + 2 * c * c * 9 + c * c * 25 + c * 2 * c * 9)
        + 16 * 16 * (2 * (2 * c) ** 2 * 9 + (2 * c) ** 2 * 25)
        + features * hidden
        + hidden * outputs
    )
    assert counts.ann_macs == ann
    snn, ann_uj = counts.energy(EnergyModel(pj_per_ac=1.0, pj_per_mac=2.0))
    assert snn == pytest.approx(T * per_step / 1e6) and ann_uj == pytest.approx(2 * ann / 1e6)


@pytest.mark.slow
def test_export_model_command(sample, tmp_path):
    loaded = make_model(tmp_path / "m.safetensors", sample.info, *EVERY_OP)
    del loaded
    r = cli(
        "export-model",
        str(tmp_path / "m.safetensors"),
        "--format",
        "nir",
        "--out",
        str(tmp_path / "m.nir"),
        "--check",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "equal to the engine" in r.stdout and "2/2 class decisions equal" in r.stdout
    assert deploy.read_nir(tmp_path / "m.nir").metadata["format"] == deploy.NIR_FORMAT

    bad = tmp_path / "bad.safetensors"
    data = bytearray((tmp_path / "m.safetensors").read_bytes())
    data[-5] ^= 0xFF
    bad.write_bytes(bytes(data))
    report = cli("export-model", str(tmp_path / "m.safetensors"), "--report")
    assert report.returncode == 0, report.stderr
    assert re.search(r"speck +no +\d+ of \d+", report.stdout) and re.search(r"snntorch +as it is +0 of", report.stdout)
    assert "FAIL integrate-and-fire neurons without leak" in report.stdout and not (tmp_path / "x.out").exists()
    one_line_error(cli("export-model", str(tmp_path / "m.safetensors")), "--report to check its targets")
    for args, message in (
        ([str(bad), "--format", "nir"], "modified after it was saved"),
        ([str(tmp_path / "m.safetensors"), "--format", "onnx"], "invalid choice"),
    ):
        r = cli("export-model", *args, "--out", str(tmp_path / "x.out"))
        one_line_error(r, message)
        assert not (tmp_path / "x.out").exists()


def test_alg1_with_an_energy_budget_and_the_accuracy_measured_at_the_bit_width():
    import pandas as pd

    from engine import api
    from engine.core.selection import Budget, parse_energy_budget, select_model

    runs = pd.DataFrame(
        [
            {
                "run_id": 1,
                "setting": "a",
                "stage": "done",
                "params": 1_000_000,
                "accuracy": 0.80,
                "accuracy_8bit": 0.79,
                "accuracy_4bit": 0.40,
                "energy_uj": 9.0,
            },
            {
                "run_id": 2,
                "setting": "b",
                "stage": "done",
                "params": 2_000_000,
                "accuracy": 0.70,
                "accuracy_8bit": 0.70,
                "accuracy_4bit": 0.69,
                "energy_uj": 3.0,
            },
            {
                "run_id": 3,
                "setting": "c",
                "stage": "done",
                "params": 500_000,
                "accuracy": 0.60,
                "accuracy_8bit": None,
                "accuracy_4bit": None,
                "energy_uj": None,
            },
        ]
    )
    assert api.choose(runs, "10M").chosen.setting == "a"  # the paper's Alg. 1: fp32 accuracy
    assert api.choose(runs, "10MB", bits=4).chosen.setting == "b"  # a keeps only 40 % at 4 bits
    chosen = api.choose(runs, "10MB", bits=8).chosen
    assert (chosen.setting, chosen.accuracy) == ("a", 0.79)  # measured, not assumed
    assert api.choose(runs, "10M", energy="5uJ").chosen.setting == "b"
    assert api.choose(runs, "1.5M", energy=5.0).chosen is None  # a is within memory but over the energy
    nothing = api.choose(runs, "10M", energy="1uJ")
    assert nothing.chosen is None and "needs 3 µJ" in nothing.reason
    assert parse_energy_budget("800nJ") == pytest.approx(0.8) and parse_energy_budget("0.01mJ") == 10
    for bad, message in (
        ("-1uJ", "must be positive and finite"),
        ("5 volts", "microjoules per inference"),
        (0, "positive"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_energy_budget(bad)
    assert select_model(api.trained_models(runs), Budget.parse("10M")).chosen.setting == "a"


def test_the_worker_measures_and_stores_what_deploy_delivers(finished, tmp_path):
    from engine import api

    runs = api.runs_frame([finished["experiment_id"]])
    assert runs[["accuracy_8bit", "accuracy_4bit", "synops", "energy_uj", "ann_energy_uj"]].notna().all().all()
    assert (runs["energy_uj"] > 0).all() and (runs["ann_energy_uj"] > runs["energy_uj"]).all()
    run = runs.iloc[0]
    details = api.model_details(int(run.run_id))["deploy"]
    assert {f["layer"] for f in details["firing"]} >= {"down.1", "head.1", "head.6"}
    assert details["accuracy_fp32"] == pytest.approx(run.accuracy)  # the energy pass saw the recorded encoding
    # The 8-bit file the Model page offers evaluates to the accuracy stored for it.
    data = load_dataset(run.dataset)
    path = api.deploy_file(int(run.run_id), "int8")
    loaded = load_model(path)
    assert loaded.meta["accuracy"] == run.accuracy_8bit
    again, _ = evaluate(
        loaded.model, DeviceImages(data.test, torch.device("cpu")), data, loaded.profile, seed=loaded.meta["eval_seed"]
    )
    assert again == pytest.approx(run.accuracy_8bit)
    nir_file = api.deploy_file(int(run.run_id), "nir")
    assert "equal to the engine" in deploy.check_file(api.checkpoint_path(int(run.run_id)), nir_file, images=4)
    # A NIR file of the format before (no other importer read it) is made again, though newer than the model.
    import nir

    graph = deploy.read_nir(nir_file)
    graph.metadata["format"] = "spikernel-nir/1"
    nir.write(str(nir_file), graph)
    assert deploy.read_nir(api.deploy_file(int(run.run_id), "nir")).metadata["format"] == deploy.NIR_FORMAT


def test_unfinished_runs_and_unknown_formats_are_refused(studio):
    from engine import api
    from engine.store import StoreError

    ids = api.submit_experiment(
        api.ExperimentConfig(
            dataset=studio["mini"], kernel_sets=("1x1_3x3",), iterations=2, epochs=1, baseline=None, name="never run"
        )
    )
    run_id = ids["run_ids"][0]
    try:  # the session's database is shared: the queued experiment must go whatever happens here
        with pytest.raises(StoreError, match="no trained model yet"):
            api.deploy_file(run_id, "nir")
        with pytest.raises(ValueError, match="unknown format"):
            api.deploy_file(run_id, "onnx")
    finally:
        api.delete_experiment(ids["experiment_id"])


# ------------------------------------------------------------------------------------ deploy report


def rules(report, target: str) -> dict[str, bool]:
    (found,) = [t for t in report if t.target == target]
    return {r.rule.split(" (")[0]: r.ok for r in found.rules}


def test_the_deploy_report_says_where_the_exported_graph_deploys_and_why_not(sample, tmp_path):
    loaded = make_model(tmp_path / "m.safetensors", sample.info, *EVERY_OP)
    report = deploy.deploy_report(deploy.to_nir(loaded))
    assert [t.target for t in report] == ["snntorch", "spikingjelly", "norse", "speck"]
    assert [t.deploys for t in report] == [True, True, False, False]  # as test_nir_importers finds them
    assert rules(report, "norse")["no node fed by parallel branches"] is False  # its executor's order
    speck = rules(report, "speck")
    assert speck["integrate-and-fire neurons without leak"] is False  # the engine's LIF leaks
    assert speck["each neuron layer fed by one convolution"] is False  # a node sums its edges
    assert speck["each convolution or linear layer drives spiking neurons"] is False  # the pool's convolutions
    assert speck["at most 9 layers"] is False
    assert speck["sum pooling of 1x1, 2x2 or 4x4"] and speck["at most 1024 channels"]
    (chip,) = [t for t in report if t.target == "speck"]
    assert "sinabs" in chip.source and "get_constraints" in chip.source


def test_a_paper_profile_model_breaks_the_chips_neuron_memory(sample, tmp_path):
    """The paper's width (128 channels at 32x32) holds 128 Ki neurons in a layer, beyond any core's 64 Ki."""
    loaded = make_model(tmp_path / "p.safetensors", sample.info, "0302 0030 0003 0000", "1x1_3x3", profile="paper")
    speck = rules(deploy.deploy_report(deploy.to_nir(loaded)), "speck")
    assert speck["neuron memory of a layer at most 64 Ki entries"] is False
    assert speck["kernels up to 16x16, strides"] is True and speck["inputs up to 128x128"] is True


def test_a_graph_within_every_chip_rule_deploys_on_speck():
    """Integrate-and-fire layers, one convolution each, a 2x2 sum pool, a small linear readout: what the chip
    takes. Built with nir itself, so the rules are shown to pass, not only to fail."""
    import nir

    conv = nir.Conv2d(
        input_shape=(16, 16), weight=np.ones((8, 2, 3, 3)), stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(8)
    )
    graph = nir.NIRGraph.from_list(
        conv,
        nir.IF(r=np.ones((8, 16, 16)), v_threshold=np.ones((8, 16, 16))),
        nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        nir.Flatten(input_type={"input": np.array([8, 8, 8])}, start_dim=0),
        nir.Linear(weight=np.ones((10, 512))),
        nir.IF(r=np.ones(10), v_threshold=np.ones(10)),
    )
    report = deploy.deploy_report(graph)
    (chip,) = [t for t in report if t.target == "speck"]
    assert chip.deploys, [(r.rule, r.detail) for r in chip.broken]
    kernel = [r for r in chip.rules if r.rule.startswith("kernel memory")][0]
    assert kernel.detail.startswith("largest 8 Ki")  # the linear layer: 8 channels x 2^(log2 64 + log2 16)
