"""The constraint's scale (issue 16, item 3): normalisations, short ramp, gradient-ratio log."""

import json

import pytest
import torch
from safetensors.torch import load_file

from spikeguard.config import load_config
from spikeguard.errors import ConfigError
from spikeguard.jobs.train import build_guard, run_experiment
from spikeguard.tgo import Normalisation, ThresholdGuard, layer_penalty, membrane_constraint

# two layers of hand-made potentials [T=2, B=2, 2 neurons]; V_th = 1, delta = 0.5
U1 = torch.tensor([[[1.0, 0.0], [0.8, 1.4]], [[1.2, 2.0], [0.6, 1.0]]])
U2 = torch.tensor([[[0.7, 0.7], [0.7, 0.7]], [[0.7, 0.7], [0.7, 0.7]]])
# hinge relu(0.5 - |u - 1|):
#   U1: 0.5, 0, 0.3, 0.1, 0.3, 0, 0.1, 0.5  (sum 1.8, squares 0.25+0.09+0.01+0.09+0.01+0.25 = 0.70)
#   U2: 0.2 everywhere (sum 1.6, squares 8 * 0.04 = 0.32)


def test_default_normalisation_is_the_paper_formula():
    assert layer_penalty(U1).item() == pytest.approx(0.70 / 8)
    assert membrane_constraint([U1, U2]).item() == pytest.approx((0.70 / 8 + 0.32 / 8) / 2)
    # the explicit default object takes the same (verbatim) path
    assert torch.equal(membrane_constraint([U1, U2], norm=Normalisation()), membrane_constraint([U1, U2]))


@pytest.mark.parametrize("norm, expected", [
    (Normalisation(layer_reduce="sum"), 0.70 / 8 + 0.32 / 8),
    (Normalisation(hinge="plain"), (1.8 / 8 + 1.6 / 8) / 2),
    (Normalisation(neuron_reduce="sum"), (0.70 / 2 + 0.32 / 2) / 2),  # sum over T and neurons, mean over B=2
    (Normalisation(layer_reduce="sum", neuron_reduce="sum", hinge="plain"), 1.8 / 2 + 1.6 / 2),
])
def test_normalisation_options_values(norm, expected):
    assert membrane_constraint([U1, U2], norm=norm).item() == pytest.approx(expected)


def test_post_reset_potential_drops_fired_neurons():
    # V = U (1 - S): 1.2, 2.0, 1.4 and 1.0 fire (U >= 1) and are reset to 0, costing nothing
    # remaining hinges of U1: 0 (u=0), 0.3 (0.8), 0.1 (0.6) -> squares 0.09 + 0.01
    got = layer_penalty(U1, norm=Normalisation(potential="post"))
    assert got.item() == pytest.approx(0.10 / 8)
    # a potential exactly at threshold costs the most before reset, nothing after
    at = torch.ones(1, 1, 1)
    assert layer_penalty(at).item() == pytest.approx(0.25)
    assert layer_penalty(at, norm=Normalisation(potential="post")).item() == 0.0


def test_bad_normalisation_names():
    with pytest.raises(ValueError, match="hinge"):
        Normalisation(hinge="cubic")
    with pytest.raises(ConfigError, match="tgo.layer_reduce"):
        load_config(None, ["tgo.layer_reduce=max"])
    with pytest.raises(ConfigError, match="tgo.ramp_fraction"):
        load_config(None, ["tgo.ramp_fraction=2"])


def test_short_ramp_fraction_and_guard_norm_from_config():
    cfg = load_config(None, ["tgo.enabled=true", "optim.epochs=20", "tgo.ramp_fraction=0.1", "tgo.hinge=plain",
                             "tgo.potential=post"])
    g = build_guard(cfg)
    assert g.schedule(1.0) == pytest.approx(0.2) and g.schedule(2.0) == pytest.approx(0.4)
    assert g.norm == Normalisation(hinge="plain", potential="post")
    # default: the linear ramp over all epochs, the paper's normalisation
    g0 = build_guard(load_config(None, ["tgo.enabled=true", "optim.epochs=20"]))
    assert g0.schedule(10.0) == pytest.approx(0.2) and g0.norm.is_default


TINY = ["data.name=digits", "model.name=small_conv", "model.T=2", "model.kw={channels = [4, 8, 8]}",
        "optim.epochs=2", "optim.batch_size=64", "data.subset=128", "data.test_subset=40", "checkpoint_every=0",
        "tgo.enabled=true", "neuron.kind=noisy_lif", "tgo.lambda_max=2.0", "data.augment=false"]


def test_grad_ratio_logged_per_epoch_and_changes_no_weight(tmp_path):
    torch.set_num_threads(1)
    a = run_experiment(load_config(None, TINY), tmp_path / "a", progress=False)
    b = run_experiment(load_config(None, TINY + ["tgo.log_grad_ratio=false"]), tmp_path / "b", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["task_grad_norm"] > 0 and r["mc_grad_norm"] > 0
        assert r["grad_ratio"] == pytest.approx(r["mc_grad_ratio"] * 2.0 * r["epoch"] / 2)  # lambda at epoch end
    assert "grad_ratio" not in (tmp_path / "b" / "log.jsonl").read_text()
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the measurement restored every RNG and buffer
    assert a["test_accuracy"] == b["test_accuracy"]


def test_guard_uses_its_normalisation():
    g = ThresholdGuard(norm=Normalisation(layer_reduce="sum"))
    assert g.constraint([U1, U2]).item() == pytest.approx(0.70 / 8 + 0.32 / 8)
