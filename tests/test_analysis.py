"""Tests of spikeguard.analysis and 'spikeguard analyze' (tiny nets, T=2, a few images)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from spikeguard.analysis import flip, gradients, jacobian, landscape, membrane, sweep
from spikeguard.analysis.plotting import parse_formats
from spikeguard.cli.main import main as cli_main
from spikeguard.data import ImageDataset
from spikeguard.errors import ConfigError, DataError
from spikeguard.models import create_model
from spikeguard.neurons import noise_seed, record_potentials

torch.set_num_threads(1)
CLASSES = [str(i) for i in range(10)]


def tiny(neuron: str = "lif", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = create_model("small_conv", num_classes=10, T=2, neuron=neuron, in_channels=1, image_size=8,
                     channels=(4, 6, 8), mean=[0.3], std=[0.4])
    # non-trivial BatchNorm statistics so that potentials spread around the threshold
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.bias.uniform_(0.2, 1.2)
    return m.eval()


def dataset(n: int = 20, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 10, CLASSES, (0.3,), (0.4,), "rand")


def png_size(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000, f"{path} missing or empty"
    with Image.open(path) as im:
        return im.size


# ---------------------------------------------------------------------------------- membrane
def test_histogram_counts_add_up_and_near_share_matches_direct_count():
    model, ds = tiny("noisy_lif"), dataset()
    h = membrane.potential_histogram(model, ds, bins=17, lo=-1.0, hi=2.0, delta=0.3, batch_size=7, seed=5)
    with noise_seed(model, 5), record_potentials(model, detach=True) as rec, torch.no_grad():
        for i in range(0, len(ds), 7):  # same batches, same noise draws
            model(ds.float_images(slice(i, i + 7)))
    total = sum(u.numel() for u in rec.potentials)
    assert int(h.counts.sum()) == total == h.num_potentials
    for name in h.layers:
        us = [u for n, u in zip(rec.names, rec.potentials) if n == name]
        assert int(h.layer_counts[name].sum()) == sum(u.numel() for u in us)
        near = sum(int(((u - 1.0).abs() < 0.3).sum()) for u in us)
        assert h.near[name] == near
    direct = sum(int(((u - 1.0).abs() < 0.3).sum()) for u in rec.potentials) / total
    assert h.near_threshold == pytest.approx(direct, abs=0)
    assert 0 < h.near_threshold < 1
    # overflow bins hold what is outside [lo, hi]
    flat = torch.cat([u.flatten() for u in rec.potentials])
    assert h.counts[0] == int((flat < -1.0).sum()) and h.counts[-1] == int((flat >= 2.0).sum())


def test_reduction_is_relative_to_baseline():
    a = membrane.PotentialHistogram(np.linspace(0, 1, 3), np.zeros(4, int), {"l": np.zeros(4, int)}, {"l": 40}, {"l": 100})
    b = membrane.PotentialHistogram(np.linspace(0, 1, 3), np.zeros(4, int), {"l": np.zeros(4, int)}, {"l": 24}, {"l": 100})
    red = membrane.near_threshold_reduction(a, b)
    assert red["overall"] == pytest.approx(0.4) and red["layers"]["l"] == pytest.approx(0.4)


def test_membrane_plots_have_expected_size(tmp_path):
    model, ds = tiny(), dataset(8)
    hists = {"a": membrane.potential_histogram(model, ds), "b": membrane.potential_histogram(tiny(seed=1), ds)}
    files = membrane.plot_potential_histograms(hists, str(tmp_path / "h.png"), figsize=(4, 3), dpi=50,
                                               formats="svg,pdf")
    assert [f.suffix for f in files] == [".png", ".svg", ".pdf"] and all(f.stat().st_size > 0 for f in files)
    assert png_size(tmp_path / "h.png") == (200, 150)
    membrane.plot_layer_histograms(hists, tmp_path / "l.png", panel_size=(2, 2), dpi=50)
    assert png_size(tmp_path / "l.png") == (400, 120)  # 4 panels (3 layers + all), 1 row (+0.4 in title)
    membrane.plot_near_threshold_bars(hists, tmp_path / "b.png", figsize=(4, 2), dpi=50)
    assert png_size(tmp_path / "b.png") == (200, 100)


def test_parse_formats():
    assert parse_formats(None) == ("png",)
    assert parse_formats("pdf, svg") == ("png", "svg", "pdf")
    with pytest.raises(ConfigError):
        parse_formats("jpg")


# --------------------------------------------------------------------------------- gradients
def test_gini_and_sparsity_metrics():
    one_hot = torch.zeros(2, 16)
    one_hot[:, 3] = 2.0
    flat = torch.ones(1, 16)
    assert gradients.gini(one_hot)[0] == pytest.approx(1 - 1 / 16)
    assert gradients.gini(flat)[0] == pytest.approx(0.0, abs=1e-12)
    s = gradients.sparsity_per_sample(torch.cat([one_hot[:1], flat, torch.zeros(1, 16)]))
    assert s["l1_l2"][0] == pytest.approx(1.0) and s["l1_l2"][1] == pytest.approx(4.0)
    assert s["near_zero"][0] == pytest.approx(15 / 16) and s["near_zero"][1] == 0
    assert bool(torch.isnan(s["gini"][2])) and s["all_zero"].tolist() == [0, 0, 1]
    summ = gradients.summarize_sparsity(s)
    assert summ["all_zero_share"] == pytest.approx(1 / 3) and summ["l1_l2"] == pytest.approx(2.5)


def test_input_gradient_of_logit_matches_autograd():
    model, ds = tiny(), dataset(4)
    x, y = ds.float_images(), ds.labels
    g = gradients.input_gradients(model, x, y, "logit")
    x0 = x[:1].clone().requires_grad_(True)
    model(x0)[0, int(y[0])].backward()
    assert torch.allclose(g[:1], x0.grad, atol=1e-6)
    with pytest.raises(ConfigError):
        gradients.input_gradients(model, x, y, "margin")


def test_gradient_heatmaps_png(tmp_path):
    model, ds = tiny(), dataset(3)
    x, y = ds.float_images(), ds.labels
    grads = {"a": gradients.input_gradients(model, x, y), "b": gradients.input_gradients(tiny(seed=2), x, y)}
    gradients.plot_gradient_heatmaps(x, grads, tmp_path / "g.png", cell=1.0, dpi=40)
    assert png_size(tmp_path / "g.png") == (156, 142)  # (1 + 2 models) cells + 0.9 in, 3 rows + 0.55 in
    summ = {"logit": {"a": gradients.gradient_sparsity(model, ds)}}
    gradients.plot_sparsity_bars(summ, tmp_path / "s.png", figsize=(6, 2), dpi=50)
    assert png_size(tmp_path / "s.png") == (300, 100)


# --------------------------------------------------------------------------------- landscape
def test_landscape_center_is_model_loss_and_weights_restored():
    model, ds = tiny("noisy_lif"), dataset(12)
    x, y = ds.float_images(), ds.labels
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, _ = landscape.mean_loss(model, x, y, seed=3)
    surf = landscape.loss_landscape(model, x, y, steps=4, span=0.5, seed=3)  # even -> 5 points incl. 0
    assert len(surf.alphas) == 5 and surf.alphas[2] == 0.0
    assert surf.center_loss == loss
    assert abs(surf.info["cosine_d1_d2"]) < 1e-6
    assert surf.loss.max() > surf.center_loss  # moving the weights changes the loss
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_directions_are_filter_normalised():
    model, ds = tiny(), dataset(8)
    d1, d2, _ = landscape.landscape_directions(model, ds.float_images(), ds.labels)
    for (_, p), a, b in zip(model.named_parameters(), d1, d2):
        if p.dim() <= 1:
            assert not a.any() and not b.any()
            continue
        wn = p.detach().flatten(1).norm(dim=1)
        assert torch.allclose(b.flatten(1).norm(dim=1), wn, rtol=1e-4)
        nz = a.flatten(1).norm(dim=1) > 0
        assert torch.allclose(a.flatten(1).norm(dim=1)[nz], wn[nz], rtol=1e-4)


def test_rfgsm_stays_in_budget_and_input_line():
    model, ds = tiny(), dataset(6)
    x, y = ds.float_images(), ds.labels
    adv = landscape.rfgsm_examples(model, x, y, eps=8 / 255)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    line = landscape.input_loss_line(model, x, y, eps=8 / 255, steps=5)
    assert len(line["t"]) == 5 and line["t"][2] == 0.0
    assert line["attack"]["loss"][2] == pytest.approx(landscape.mean_loss(model, x, y)[0])


# -------------------------------------------------------------------------------------- flip
@pytest.mark.parametrize("sigma", [0.3, math.sqrt(0.4)])
def test_monte_carlo_flip_matches_closed_form(sigma):
    d = np.array([-1.0, -0.4, -0.1, 0.0, 0.05, 0.3, 0.8])
    p, se = flip.monte_carlo_flip(d, sigma, draws=40000, seed=1)
    cf = flip.flip_probability(d, sigma)
    assert cf[3] == pytest.approx(0.5)
    tol = 4 * np.sqrt(np.maximum(cf * (1 - cf), 1 / 40000) / 40000) + 1e-4
    assert np.all(np.abs(p - cf) < tol), (p, cf)


def test_measured_flips_and_plots(tmp_path):
    ds = dataset(10)
    meas = {n: flip.measure_flip_rates(m, ds, eps=16 / 255, bins=5, max_distance=1.0)
            for n, m in (("a", tiny()), ("b", tiny("noisy_lif", 1)))}
    for r in meas.values():
        assert int(r.neurons.sum()) == sum(r.layer_neurons.values())
        assert int(r.flips.sum()) == sum(r.layer_flips.values()) and 0 < r.overall_rate < 1
    # no perturbation, same noise -> no flips
    zero = flip.measure_flip_rates(tiny("noisy_lif", 1), ds, eps=1e-12, perturbation="random")
    assert zero.overall_rate == 0.0
    flip.plot_flip_rates(meas, tmp_path / "f.png", figsize=(6, 3), dpi=50)
    assert png_size(tmp_path / "f.png") == (300, 150)
    th = flip.flip_theory((0.5,), points=5, draws=500)
    flip.plot_flip_theory(th, tmp_path / "t.png", figsize=(6, 3), dpi=50)
    assert png_size(tmp_path / "t.png") == (300, 150)


# ---------------------------------------------------------------------------------- jacobian
def test_jacobian_norms_match_exact_on_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x = torch.rand(3, 1, 4, 4)
    w = model[1].weight.detach()
    exact_2 = torch.linalg.matrix_norm(w, 2)
    power = jacobian.spectral_norm(model, x, iters=200, tol=1e-9, method="power")
    assert torch.allclose(power, exact_2.expand(3), rtol=1e-4)
    assert torch.allclose(jacobian.spectral_norm(model, x, method="gram"), exact_2.expand(3), rtol=1e-5)
    assert torch.allclose(jacobian.frobenius_norm(model, x), w.norm().expand(3), rtol=1e-5)
    est = jacobian.frobenius_norm(model, x, projections=400, seed=1)
    assert torch.allclose(est, w.norm().expand(3), rtol=0.15)
    assert torch.allclose(jacobian.exact_jacobian(model, x)[0], w)


def test_jacobian_power_iteration_through_spiking_model():
    model, ds = tiny("noisy_lif"), dataset(4)
    x = ds.float_images()
    exact = torch.linalg.matrix_norm(jacobian.exact_jacobian(model, x, seed=2), 2)
    power = jacobian.spectral_norm(model, x, iters=300, tol=1e-7, seed=2, method="power")
    gram = jacobian.spectral_norm(model, x, seed=2, method="gram")
    assert torch.allclose(gram, exact, rtol=1e-4)
    assert torch.allclose(power, exact, rtol=1e-2)


def test_bound_check_and_plot(tmp_path):
    from spikeguard.attacks import FGSM

    model, ds = tiny(), dataset(6)
    x, y = ds.float_images(), ds.labels
    c = jacobian.bound_check(model, x, y, FGSM(model, eps=4 / 255))
    assert np.all(c["delta_linf"] <= 4 / 255 + 1e-6)
    assert np.allclose(c["bound"], c["spectral"] * c["delta_l2"], rtol=1e-5)
    assert np.all(c["linear"] <= c["bound"] * (1 + 1e-4) + 1e-6)  # ||J d|| <= ||J|| ||d||
    norms = {"m": jacobian.jacobian_norms(model, x)}
    jacobian.plot_jacobian(norms, {"m": c}, tmp_path / "j.png", figsize=(6, 3), dpi=50)
    assert png_size(tmp_path / "j.png") == (300, 150)


# ------------------------------------------------------------------------------------- sweep
def _v2(model, eps, attacks, clean, lam=None, n=100, worst=None, **prov):
    """A version-2 result document as ``write_robustness`` writes it (the fields sweep reads)."""
    rep = {"eps": eps, "n_samples": n, "clean": {"accuracy": clean},
           "attacks": {k: {"accuracy": v} for k, v in attacks.items()}}
    if worst is not None:
        rep["worst_case"] = {"accuracy": worst}
    return {"schema": "spikeguard.robustness", "version": 2, "model": model, "lambda_max": lam,
            "provenance": {"command": "spikeguard evaluate", "protocol": "engine", "n_samples": n, "seed": 0,
                           "passes": 1, "eot": 1, **prov}, "table": {}, "report": rep}


def test_sweep_reads_demo_and_evaluation_layouts(tmp_path):
    # the demo's results.json as spikeguard 0.1.0 wrote it (version 1, no schema key)
    demo = {"config": {"lambda_max": 0.4},
            "models": {"vanilla": {"clean": 0.9, "attacks": {"fgsm": {"8/255": 0.2, "16/255": 0.1}}},
                       "tgo": {"clean": 0.88, "attacks": {"fgsm": {"8/255": 0.4, "16/255": 0.3}}}}}
    (tmp_path / "results.json").write_text(json.dumps(demo))
    for i, (e, a) in enumerate(((2 / 255, 0.6), (8 / 255, 0.3))):
        (tmp_path / f"ev{i}.json").write_text(json.dumps(_v2("tgo_lam0.2", e, {"pgd10": a, "fgsm": a + 0.1}, 0.9,
                                                               lam=0.2, worst=a)))
    (tmp_path / "ev2.json").write_text(json.dumps(_v2("tgo_lam0.6", 8 / 255, {"pgd10": 0.4}, 0.85, lam=0.6, worst=0.4)))
    recs = sweep.load_sweep_records([tmp_path / "results.json", *sorted(tmp_path.glob("ev*.json"))])
    demo_recs = [r for r in recs if r.model in ("vanilla", "tgo")]
    assert len(demo_recs) == 4
    assert {r.n_samples for r in demo_recs} == {360}  # the demo's whole test split
    assert {r.lambda_max for r in demo_recs if r.model == "tgo"} == {0.4}
    assert {r.lambda_max for r in demo_recs if r.model == "vanilla"} == {None}
    pct = [r for r in recs if r.model == "tgo_lam0.6" and r.attack == "pgd10"][0]
    assert pct.accuracy == pytest.approx(0.4) and pct.clean == pytest.approx(0.85) and pct.n_samples == 100
    curves = sweep.select_curve(recs)  # not every model has "worst case" -> min over attacks
    assert curves["vanilla"] == [(pytest.approx(8 / 255), 0.2), (pytest.approx(16 / 255), 0.1)]
    assert sweep.select_curve(recs, "fgsm")["tgo_lam0.2"][0][1] == pytest.approx(0.7)
    lam = sweep.lambda_curves(recs, 8 / 255, "pgd10")
    assert lam["tgo"]["robust"] == [(0.2, 0.3), (0.6, 0.4)]
    sweep.plot_sweep(recs, tmp_path / "s.png", figsize=(6, 3), dpi=50)
    assert png_size(tmp_path / "s.png") == (300, 150)
    (tmp_path / "junk.json").write_text('{"hello": 1}')
    with pytest.raises(DataError, match="not a spikeguard result file"):
        sweep.load_sweep_records([tmp_path / "junk.json"])
    # an ad-hoc layout the 0.1.0 reader guessed at is no longer read
    (tmp_path / "guess.json").write_text(json.dumps({"eps": "8/255", "attacks": {"pgd10": 40.0}}))
    with pytest.raises(DataError):
        sweep.load_sweep_records([tmp_path / "guess.json"])


def test_sweep_keeps_different_provenance_apart_unless_merged(tmp_path, capsys):
    """issue 14, item 1: the demo's 360-image numbers and a later 60-image evaluation of the same
    model never share a row silently; the table shows the sample count."""
    demo = {"config": {"lambda_max": 0.4, "n_test": 0, "seed": 0},
            "models": {"vanilla": {"clean": 0.99, "attacks": {"fgsm": {"8/255": 0.95, "16/255": 0.88}}},
                       "tgo": {"clean": 0.98, "attacks": {"fgsm": {"8/255": 0.924, "16/255": 0.79}}}}}
    (tmp_path / "results.json").write_text(json.dumps(demo))
    ev = tmp_path / "tgo" / "evaluation" / "20261128-120000-fgsm-eps8"
    ev.mkdir(parents=True)
    (ev / "robustness.json").write_text(json.dumps(_v2("tgo", 8 / 255, {"fgsm": 0.935}, 0.983, n=60)))
    out = tmp_path / "sw"
    rc = cli_main(["analyze", "sweep", str(tmp_path / "results.json"), str(tmp_path / "tgo" / "evaluation"),
                   "--reference", "vanilla", "--out", str(out)])
    assert rc == 0
    table = (out / "sweep_table.md").read_text()
    assert "| model | n | clean |" in table
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in table.splitlines()[2:] if ln.startswith("|")}
    assert "vanilla" in rows and "tgo" not in rows  # tgo is split into its two provenances
    demo_row = next(v for k, v in rows.items() if k.startswith("tgo [demo, n=360"))
    eval_row = next(v for k, v in rows.items() if k.startswith("tgo [evaluate, n=60"))
    assert "92.4" in demo_row and "93.5" not in demo_row and "93.5" in eval_row
    assert "92.4 (-2.6)" in demo_row  # the delta is taken against the reference of the same provenance
    assert "93.5 (" not in eval_row  # no vanilla evaluation of n=60: no delta
    # asked to merge: one row, and the table says what was merged
    rc = cli_main(["analyze", "sweep", str(tmp_path / "results.json"), str(tmp_path / "tgo" / "evaluation"),
                   "--merge", "--out", str(tmp_path / "sw2")])
    assert rc == 0
    merged = (tmp_path / "sw2" / "sweep_table.md").read_text()
    assert "| tgo | 60, 360 |" in merged and "row 'tgo' merges results of different provenance" in merged
    assert "merges" in capsys.readouterr().out


def test_sweep_reads_evaluate_robustness_json(tmp_path):
    run = tmp_path / "tgo_run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"tgo": {"enabled": True, "lambda_max": 0.4}}}))
    doc = {"checkpoint": str(run), "command": "evaluate", "table": {"clean": 0.9, "FGSM": 0.5},
           "report": {"eps": 8 / 255, "eps_label": "8/255", "clean": {"accuracy": 0.9},
                      "attacks": {"fgsm": {"accuracy": 0.5}}, "worst_case": {"accuracy": 0.5}}}
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "robustness.json").write_text(json.dumps(doc))
    recs = sweep.load_sweep_records([tmp_path / "ev"])
    assert {(r.model, r.attack, r.accuracy, r.clean, r.lambda_max) for r in recs} == {
        ("tgo_run", "fgsm", 0.5, 0.9, 0.4), ("tgo_run", sweep.WORST, 0.5, 0.9, 0.4)}


def test_accuracy_table_layout_and_deltas():
    R = sweep.SweepRecord
    recs = [R("bptt", "fgsm", 8 / 255, 0.10, 0.50), R("bptt", "pgd10", 8 / 255, 0.02, 0.50),
            R("bptt", "fgsm", 2 / 255, 0.30, 0.50), R("tgo", "fgsm", 8 / 255, 0.25, 0.45)]
    lines = sweep.accuracy_table(recs, reference="bptt").splitlines()
    assert lines[0] == "| model | n | clean | fgsm 2/255 | fgsm 8/255 | pgd10 8/255 |"  # eps first, then attack order
    assert lines[2] == "| bptt | ? | 50.0 | 30.0 | 10.0 | 2.0 |"
    assert lines[3] == "| tgo | ? | 45.0 (-5.0) | - | 25.0 (+15.0) | - |"
    with pytest.raises(ConfigError):
        sweep.accuracy_table(recs, reference="nope")


# --------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    ckpt = pytest.importorskip("spikeguard.checkpoint")
    from spikeguard.config import ExperimentConfig

    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, neuron in (("van", "lif"), ("tgo", "noisy_lif")):
        cfg = ExperimentConfig(name=name)
        cfg.data.name = "digits"
        cfg.model.name, cfg.model.T, cfg.model.num_classes = "small_conv", 2, 10
        cfg.model.kw = {"in_channels": 1, "image_size": 8, "channels": [4, 6, 8]}
        cfg.neuron.kind = neuron
        cfg.tgo.enabled = neuron == "noisy_lif"
        model = tiny(neuron)
        ckpt.save_checkpoint(root / name, model, cfg)
        out.append(root / name)
    return out


def test_cli_analyze_all_writes_pngs_and_json(run_dirs, tmp_path):
    from spikeguard.cli.main import main

    out = tmp_path / "an"
    args = ["analyze", "all", "-k", f"vanilla={run_dirs[0]}", "-k", str(run_dirs[1]), "--out", str(out),
            "--n", "12", "--steps", "3", "--draws", "300", "--iters", "3", "--images", "2", "--no-progress"]
    assert main(args) == 0
    expected = {"membrane.png": (960, 600), "membrane_layers.png": None, "membrane_near_threshold.png": (960, 540),
                "gradients_logit.png": None, "gradients_loss.png": None, "gradient_sparsity.png": (1080, 420),
                "landscape_contour.png": None, "landscape_surface.png": None, "landscape_input.png": (960, 540),
                "flip_theory.png": (1440, 540), "flip_rates.png": (1440, 540), "jacobian.png": (1440, 570)}
    for name, size in expected.items():
        got = png_size(out / name)
        if size is not None:
            assert got == size, name
    mem = json.loads((out / "membrane.json").read_text())
    assert set(mem["models"]) == {"vanilla", "tgo"} and "tgo" in mem["reduction_vs_baseline"]
    assert json.loads((out / "flip.json").read_text())["measured"]["tgo"]["num_samples"] == 12
    assert (out / "membrane.csv").read_text().startswith("model,layer,near,total")


def test_cli_errors_are_one_line(run_dirs, tmp_path, capsys):
    from spikeguard.cli.main import main

    assert main(["analyze", "membrane", "--out", str(tmp_path)]) == 2
    assert main(["analyze", "membrane", "-k", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert main(["analyze", "sweep", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    assert main(["analyze", "flip", "--format", "gif", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 4 and "Traceback" not in err


def test_jacobian_figure_with_all_zero_changes_is_written_not_a_log_scale_error(tmp_path):
    # a model whose spikes never move gives zero output change and bound: matplotlib cannot log-scale that
    from spikeguard.analysis.jacobian import plot_jacobian

    zeros = {"m": {"actual": np.zeros(4), "bound": np.zeros(4)}}
    out = plot_jacobian({"m": {"spectral": np.zeros(4)}}, zeros, tmp_path / "j.png")
    assert [p.name for p in out] == ["j.png"] and (tmp_path / "j.png").stat().st_size > 0
