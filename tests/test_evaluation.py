"""The evaluation engine: per-sample/per-pass results, worst case, stochastic passes,
JSON/table output, the training hook and the ``spikeguard evaluate`` CLI."""

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from spikeguard.attacks import PGD, Attack
from spikeguard.errors import SpikeguardError
from spikeguard.evaluation import correct_per_pass, evaluate_config_attacks, evaluate_robustness
from spikeguard.io import atomic_write_json
from spikeguard.models import create_model

torch.set_num_threads(1)


class MeanThreshold(nn.Module):
    """Class 0 if the image's mean pixel is above 0.5, else class 1 (deterministic)."""

    def forward(self, x):
        m = x.flatten(1).mean(1) - 0.5
        return torch.stack([20 * m, -20 * m], 1)


class FlipListed(Attack):
    """Pushes exactly the listed images (recognised by their constant value) across the boundary."""

    def __init__(self, model, eps, values):
        super().__init__(model, eps)
        self.values = torch.tensor(values)

    def forward(self, images, labels):
        c = images.flatten(1).mean(1)
        hit = ((c[:, None] - self.values[None]).abs() < 1e-6).any(1)
        toward = torch.where(c > 0.5, -1.0, 1.0).view(-1, 1, 1, 1)
        return self.project(images + hit.view(-1, 1, 1, 1) * toward * self.eps, images)


class Overreach(Attack):
    """Breaks the budget on purpose (2 eps)."""

    def forward(self, images, labels):
        return (images + 2 * self.eps).clamp(0, 1)


def _toy():
    c = torch.tensor([0.52, 0.49, 0.51, 0.48, 0.53])
    x = c.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    y = torch.tensor([0, 1, 0, 1, 1])  # the last one is misclassified clean
    return MeanThreshold(), x, y, c.tolist()


def test_per_sample_results_and_worst_case_are_exact():
    model, x, y, c = _toy()
    eps = 0.03
    attacks = [("a", FlipListed(model, eps, [c[0], c[1]])), ("b", FlipListed(model, eps, [c[1], c[2]])),
               ("none", FlipListed(model, eps, []))]
    rep = evaluate_robustness(model, x, y, attacks, eps=eps, batch_size=2)
    assert rep.passes == 1 and not rep.stochastic
    assert rep.clean.tolist() == [[True, True, True, True, False]]
    assert rep.results["a"].robust.tolist() == [[False, False, True, True, False]]
    assert rep.results["b"].robust.tolist() == [[True, False, False, True, False]]
    assert rep.results["none"].robust.tolist() == rep.clean.tolist()
    assert rep.worst_case().tolist() == [[False, False, False, True, False]]
    assert rep.accuracy("worst_case") == pytest.approx(0.2)
    assert rep.results["a"].n_attacked == 4  # the clean mistake is never attacked
    assert rep.results["a"].within_budget and rep.results["a"].max_linf == pytest.approx(eps)


def test_budget_violations_are_recorded():
    model, x, y, _ = _toy()
    rep = evaluate_robustness(model, x, y, [("over", Overreach(model, 0.01))])
    r = rep.results["over"]
    assert not r.within_budget and r.max_linf == pytest.approx(0.02)
    assert rep.to_dict()["attacks"]["over"]["within_budget"] is False


def _noisy():
    torch.manual_seed(0)
    return create_model("small_conv", num_classes=10, T=2, neuron="noisy_lif", in_channels=1, image_size=8,
                        channels=(4, 8, 8)).eval()


def test_stochastic_model_is_judged_over_passes_with_common_noise_and_is_reproducible():
    model = _noisy()
    x = torch.rand(12, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # so that most samples are attacked
    kw = dict(eps=8 / 255, eot=2, passes=5, batch_size=8, seed=3)
    names = ["fgsm", "pgd2", "fixed-noise", "noise-free"]
    over = {"fixed-noise": {"steps": 2}, "noise-free": {"steps": 2}}
    r1 = evaluate_robustness(model, x, y, names, attack_kw=over, **kw)
    r2 = evaluate_robustness(model, x, y, names, attack_kw=over, **kw)
    assert r1.stochastic and r1.passes == 5 and r1.eot == 2
    assert r1.clean.shape == (5, 12)
    for n in names:
        assert r1.results[n].robust.shape == (5, 12)
        assert torch.equal(r1.results[n].robust, r2.results[n].robust)
        assert r1.results[n].within_budget
    assert torch.equal(r1.clean, r2.clean)
    # clean pass p of batch 0 used the evaluation noise seed, so it is reproducible by hand
    from spikeguard.evaluation.engine import _eval_seed

    torch.testing.assert_close(r1.clean[:, :8], correct_per_pass(model, x[:8], y[:8], 5, _eval_seed(3, 0)).cpu())
    # robust on a pass implies correct on that pass
    assert not (r1.results["pgd2"].robust & ~r1.clean).any()
    doc = r1.to_dict()
    assert doc["clean"]["ci95"] is not None and len(doc["clean"]["per_pass"]) == 5
    assert doc["attacks"]["fixed-noise"]["threat"] == "known-noise"
    assert set(doc["worst_case_fresh_noise"]["attacks"]) == {"fgsm", "pgd2", "noise-free"}
    assert doc["worst_case"]["accuracy"] <= min(doc["attacks"][n]["accuracy"] for n in names) + 1e-9


def test_deterministic_model_skips_noise_attacks_and_ignores_passes():
    model = create_model("small_conv", num_classes=10, T=2, in_channels=1, image_size=8, channels=(4, 8, 8)).eval()
    x = torch.rand(6, 1, 8, 8)
    y = torch.randint(0, 10, (6,))
    rep = evaluate_robustness(model, x, y, ["fgsm", "fixed-noise", "noise-free", "transfer"], eot=4, passes=7)
    assert rep.passes == 1 and rep.eot == 1
    assert set(rep.results) == {"fgsm"}
    assert set(rep.skipped) == {"fixed-noise", "noise-free", "transfer"}


def test_transfer_from_a_source_model_and_table_layout(tmp_path):
    model = _noisy()
    source = create_model("small_conv", num_classes=10, T=2, in_channels=1, image_size=8, channels=(4, 8, 8)).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    rep = evaluate_robustness(model, x, y, ["mtpgd2", "transfer", "pgd3", "fgsm"], source=source, passes=2,
                              attack_kw={"transfer": {"steps": 2}, "mtpgd2": {"n_targets": 2}})
    assert rep.results["transfer"].threat == "transfer"
    assert "via=PGD" in rep.results["transfer"].description
    assert list(rep.table_row()) == ["clean", "FGSM", "PGD3", "MTPGD2", "TRANSFER", "worst case"]
    text = rep.format_table("t")
    assert "WORST CASE" in text and "TRANSFER" in text
    atomic_write_json(tmp_path / "r.json", rep.to_dict())
    back = json.loads((tmp_path / "r.json").read_text())
    assert len(back["per_sample"]["pgd3"]) == 4


def test_bad_inputs_are_one_line_errors():
    model, x, y, _ = _toy()
    with pytest.raises(SpikeguardError, match="unknown attack"):
        evaluate_robustness(model, x, y, ["nope"])
    with pytest.raises(SpikeguardError, match="labels"):
        evaluate_robustness(model, x, y[:2], ["fgsm"])
    with pytest.raises(SpikeguardError, match="twice"):
        evaluate_robustness(model, x, y, [("a", PGD(model, 0.01, steps=1)), ("a", PGD(model, 0.01, steps=1))])


def test_training_hook(tmp_path):
    from spikeguard.data import ImageDataset

    model, x, y, _ = _toy()
    ds = ImageDataset(x, y, ["0", "1"], name="toy")
    cfg = SimpleNamespace(eval=SimpleNamespace(attacks=["fgsm", "pgd2"], eps="8/255", passes=1, batch_size=8), seed=0)
    out = evaluate_config_attacks(model, ds, cfg, out_dir=tmp_path)
    assert set(out["attacks"]) == {"fgsm", "pgd2"} and "per_sample" not in out
    assert json.loads((tmp_path / "robustness.json").read_text())["table"]["clean"] == pytest.approx(0.8)


def test_cli_evaluate_on_a_saved_run(tmp_path, capsys):
    from spikeguard.checkpoint import save_checkpoint
    from spikeguard.cli.main import main
    from spikeguard.config import load_config
    from spikeguard.jobs.train import build_model

    cfg = load_config(None, ["data.name=digits", "model.name=small_conv", "model.T=2",
                             "model.kw={channels = [4, 8, 8]}", "neuron.kind=noisy_lif"])
    model = build_model(cfg)
    save_checkpoint(tmp_path / "run", model, cfg)
    out = tmp_path / "eval"
    rc = main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--attacks", "fgsm,pgd2,noise-free",
               "--n-samples", "20", "--eot", "2", "--passes", "2", "--no-progress", "--individual", "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "robustness.json").read_text())
    assert doc["data"]["n_samples"] == 20 and doc["report"]["passes"] == 2 and doc["report"]["mode"] == "individual"
    assert list(doc["table"])[:3] == ["clean", "FGSM", "PGD2"]
    assert "WORST CASE" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--attacks", "pgd-x"]) == 2
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--eps", "abc"]) == 2
