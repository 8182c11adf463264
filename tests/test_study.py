"""The study machinery (issue 16): protocols, study files, an end-to-end study on digits, budget,
calibration and the BN-rescaled control."""

import json
from pathlib import Path

import pytest
import torch

from spikeguard.analysis.bn_control import bn_rescale_control, bn_rescaled
from spikeguard.config import load_config
from spikeguard.errors import ConfigError
from spikeguard.models import create_model
from spikeguard.protocols import EPS_RULE, PAPER, STRONG, get_protocol
from spikeguard.jobs.study import load_study, parse_duration, plan_epochs, run_study
from spikeguard.jobs.study.tables import header

STUDIES = Path(__file__).resolve().parents[1] / "configs" / "studies"
SMOKE = STUDIES / "cpu-digits-smoke.toml"


# ------------------------------------------------------------------ protocols
def test_paper_protocol_is_the_papers_evaluation():
    single, eot = PAPER.groups
    assert single.attacks == ("fgsm", "rfgsm", "pgd7", "pgd10", "pgd20", "pgd40")
    assert (single.eot, single.passes, single.alpha) == (1, 1, 0.01)  # no EoT, one fresh pass
    assert eot.eot > 1 and eot.passes == 1 and {"apgd-ce10", "mtpgd10"} == set(eot.attacks)


def test_strong_protocol_steps_follow_eps_and_sweep_widths():
    (g,) = STRONG.groups
    assert g.audit and g.eot > 1 and g.passes > 1 and g.alpha == EPS_RULE  # the engine's 2.5 eps / steps
    widths = {w for n, w in g.attack_kw["sg-ensemble"]["members"] if n == "triangle"}
    assert {0.25, 1.0} <= widths


def test_protocol_overrides():
    p = get_protocol("strong", {"eot": 2, "drop": ["square"], "attack_kw": {"apgd-ce": {"steps": 5}}, "n_samples": 7})
    (g,) = p.groups
    assert g.eot == 2 and "square" not in g.attacks and g.attack_kw["apgd-ce"] == {"steps": 5}
    assert "members" in g.attack_kw["sg-ensemble"] and p.n_samples == 7
    with pytest.raises(ConfigError, match="alpha"):
        get_protocol("strong", {"alpha": "big"})
    assert get_protocol("paper", {"alpha": "eps"}).groups[0].alpha == EPS_RULE
    with pytest.raises(ConfigError, match="unknown override"):
        get_protocol("paper", {"eots": 2})
    with pytest.raises(ConfigError, match="no attack"):
        get_protocol("paper", {"drop": list(PAPER.attacks())})
    with pytest.raises(ConfigError, match="unknown protocol"):
        get_protocol("weak")


# ------------------------------------------------------------------ study files
@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.stem)
def test_study_files_load(path):
    try:
        spec = load_study(path)
    except ConfigError as e:
        if "parquet" in str(e):
            pytest.skip(f"{path.name} needs the cifar10-parquet data set (the gpu helper's reader): {e}")
        raise
    assert spec.runs and {p.name for p in spec.protocols} == {"paper", "strong"}
    assert all(not r.config.eval.attacks for r in spec.runs)


def test_bad_study_files(tmp_path):
    bad = tmp_path / "s.toml"
    bad.write_text('[[runs]]\nname = "a"\nset = ["optim.epochz=1"]\n')
    with pytest.raises(ConfigError, match="optim.epochz"):
        load_study(bad)
    bad.write_text('[[runs]]\nname = "a b"\n')
    with pytest.raises(ConfigError, match="folder-safe"):
        load_study(bad)
    bad.write_text('[[runs]]\nname = "a"\nsource = "b"\n')
    with pytest.raises(ConfigError, match="source"):
        load_study(bad)
    bad.write_text('colour = 1\n[[runs]]\nname = "a"\n')
    with pytest.raises(ConfigError, match="colour"):
        load_study(bad)


def test_parse_duration():
    assert parse_duration("9m") == 540 and parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    with pytest.raises(ConfigError):
        parse_duration("soon")


# ------------------------------------------------------------------ end to end
def _small_spec():
    spec = load_study(SMOKE)
    spec.evaluation["n_samples"] = 8
    spec.evaluation["batch_size"] = 8
    return spec


def test_study_end_to_end_and_reuse(tmp_path):
    torch.set_num_threads(1)
    lines = []
    doc = run_study(_small_spec(), tmp_path, progress=False, log=lines.append)
    md = (tmp_path / "study.md").read_text()
    for col in ("clean (P)", "FGSM (P)", "PGD40 (P)", "APGD-CE10 (P)", "clean (S)", "worst case (S)"):
        assert col in doc["columns"] and header(col) in md
    assert doc["columns"].index("worst case (S)") > doc["columns"].index("clean (S)") > doc["columns"].index("PGD40 (P)")
    assert "FGSM (S)" not in doc["columns"]  # the strong protocol is a cascade: no per-attack accuracies
    rows = {r["run"]: r for r in doc["rows"]}
    assert set(rows) == {"vanilla", "tgo"}
    v, t = rows["vanilla"], rows["tgo"]
    assert 0 < v["near_threshold"] < 1 and 0 < t["near_threshold"] < 1
    assert v["bn_control"]["t0_spikes_equal"] == 1.0
    assert v["bn_control"]["share_rescaled"] < v["near_threshold"]
    assert t["lambda_max"] == 0.4 and t["normalisation"] == "mean/mean/sq/U" and t["grad_ratio"] > 0
    assert v["lambda_max"] is None and "TRANSFER (S)" in v["skipped"]  # deterministic, no source
    assert "TRANSFER (S)" not in t["skipped"]  # source = the vanilla run
    assert t["audit"]["verdict"] in ("PASS", "WARN")
    for r in doc["rows"]:
        for col, acc in r["accuracy"].items():
            assert 0.0 <= acc <= 1.0
        assert r["accuracy"]["worst case (S)"] <= min(v for k, v in r["accuracy"].items() if k.endswith("(S)"))
    assert (tmp_path / "figures" / "accuracy.png").is_file() and (tmp_path / "figures" / "near_threshold.png").is_file()
    html = (tmp_path / "report.html").read_text()
    assert "vanilla [paper]" in html and "tgo [strong]" in html and "<h2>Study cpu-digits-smoke" in html
    from spikeguard.evaluation.results import read_results

    saved = read_results(json.loads((tmp_path / "runs" / "tgo" / "eval-strong" / "strong.json").read_text()))
    assert saved[0]["version"] == 3 and saved[0]["provenance"]["study_protocol"] == "strong"
    assert saved[0]["report"]["mode"] == "cascade" and "transfer" in saved[0]["report"]["attacks"]
    assert saved[0]["report"]["step_size"]["rule"] == "eps"
    assert json.loads((tmp_path / "study.json").read_text())["rows"][0]["run"] == "vanilla"
    assert any("stage 5/5" in s for s in lines)

    # --tables-only: the same comparison from the folder alone; unfinished work is listed, not filled in
    from spikeguard.jobs.study import summarize_study

    same = summarize_study(_small_spec(), tmp_path, report=False, log=lambda s: None)
    assert same["complete"] and same["pending"] == [] and same["rows"] == json.loads(json.dumps(doc["rows"]))
    assert same["rows"][1]["lambda_max"] == 0.4
    strong = tmp_path / "runs" / "tgo" / "eval-strong" / "strong.json"
    kept = strong.read_bytes()
    strong.unlink()
    part = summarize_study(_small_spec(), tmp_path, report=False, log=lambda s: None)
    assert not part["complete"] and part["pending"] == ["tgo: strong/strong"]
    assert "worst case (S)" not in part["rows"][1]["accuracy"] and "worst case (S)" in part["rows"][0]["accuracy"]
    assert "**Not finished**" in (tmp_path / "study.md").read_text() and "tgo: strong/strong" in \
        (tmp_path / "study.md").read_text()
    strong.write_bytes(kept)
    with pytest.raises(ConfigError, match="does not exist"):
        summarize_study(_small_spec(), tmp_path / "nowhere", report=False)

    # finished runs and evaluations are reused; an interrupted one (no results.json) is resumed
    (tmp_path / "runs" / "tgo" / "results.json").unlink()
    lines.clear()
    again = run_study(_small_spec(), tmp_path, progress=False, log=lines.append, report=False)
    text = "\n".join(lines)
    assert "'vanilla': finished before, reused" in text and "'tgo': resuming" in text
    assert text.count("finished before, reused (") == 6  # 3 groups x 2 runs
    assert again["rows"][0]["accuracy"] == doc["rows"][0]["accuracy"]

    # a run folder holding other settings is refused, not silently mixed in
    spec = _small_spec()
    spec.runs[0].config.optim.lr = 0.05
    with pytest.raises(ConfigError, match="other settings"):
        run_study(spec, tmp_path, progress=False, log=lambda s: None, report=False)


def test_budget_chooses_epochs_from_a_probe_and_keeps_its_choice(tmp_path):
    torch.set_num_threads(1)
    spec = _small_spec()
    lines = []
    plan = plan_epochs(spec, tmp_path, 3600.0, lines.append)
    assert plan["epochs"] >= 1 and set(plan["seconds_per_epoch"]) == {"vanilla", "tgo"}
    assert plan["estimated_train_s"] <= 3600 * (1 - spec.budget["eval_reserve"])
    assert any("epochs per run" in s for s in lines)
    tiny = plan_epochs(spec, tmp_path / "x", 0.001, lambda s: None)
    assert tiny["epochs"] == 1
    lines.clear()
    assert plan_epochs(spec, tmp_path, 10.0, lines.append)["epochs"] == plan["epochs"]  # reused
    assert "reusing" in lines[0]


# ------------------------------------------------------------------ BN-rescaled control
def _bn_model():
    torch.manual_seed(0)
    m = create_model("small_conv", num_classes=10, T=2, neuron="lif", in_channels=1, image_size=8, channels=[4, 8, 8])
    x = torch.rand(32, 1, 8, 8)
    m.train()
    with torch.no_grad():
        m(x)  # non-trivial running statistics
    return m.eval(), x


def test_bn_rescale_keeps_first_step_spikes_and_lowers_share():
    m, x = _bn_model()
    y = torch.randint(0, 10, (32,))
    c = bn_rescale_control(m, x, y, k=3.0, attack=None)
    assert c["t0_spikes_equal"] == 1.0 and c["first_layer_t0_equal"] == 1.0
    assert c["share_rescaled"] < c["share"]
    same = bn_rescale_control(m, x, y, k=1.0, attack="fgsm")
    assert same["share_rescaled"] == pytest.approx(same["share"]) and same["attacked"] == same["attacked_rescaled"]
    # the affine map itself: z' - V_th = k (z - V_th)
    twin = bn_rescaled(m, 2.0)
    bn, bn2 = m.stem[1], twin.stem[1]
    z = torch.randn(4, bn.num_features, 8, 8)
    assert torch.allclose(bn2(z) - 1.0, 2.0 * (bn(z) - 1.0), atol=1e-5)
    with pytest.raises(Exception, match="k must be > 0"):
        bn_rescaled(m, 0.0)


def test_group_overrides_leave_the_paper_single_pass_group_without_eot():
    p = get_protocol("paper", {"table3-eot": {"eot": 3}, "passes": 1})
    single, eot = p.groups
    assert single.eot == 1 and eot.eot == 3
    spec = load_study(SMOKE)
    paper = next(x for x in spec.protocols if x.name == "paper")
    assert paper.groups[0].eot == 1 and paper.groups[1].eot == 2
    with pytest.raises(ConfigError, match="table of group settings"):
        get_protocol("paper", {"single-pass": 3})


def test_attacks_override_replaces_a_groups_attack_list():
    p = get_protocol("paper", {"groups": ["single-pass"],
                               "single-pass": {"attacks": ["FGSM", "rfgsm", "pgd40", "fgsm"], "eot": 4, "passes": 4}})
    (g,) = p.groups
    assert g.attacks == ("fgsm", "rfgsm", "pgd40") and (g.eot, g.passes, g.alpha) == (4, 4, 0.01)
    assert get_protocol("strong", {"attacks": ["pgd10", "square"], "drop": ["square"]}).groups[0].attacks == ("pgd10",)
    single, eot = get_protocol("paper", {"single-pass": {"attacks": ["pgd7"]}}).groups
    assert single.attacks == ("pgd7",) and eot.attacks == PAPER.groups[1].attacks
    with pytest.raises(ConfigError, match="unknown attack 'pgd-nope'") as e:
        get_protocol("paper", {"single-pass": {"attacks": ["fgsm", "pgd-nope"]}})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="one group"):
        get_protocol("paper", {"attacks": ["fgsm"]})  # two groups: say which one
    with pytest.raises(ConfigError, match="non-empty list"):
        get_protocol("paper", {"single-pass": {"attacks": "fgsm"}})


def test_study_file_attacks_override(tmp_path):
    text = SMOKE.read_text().replace('preset = "', f'preset = "{SMOKE.parent}/')
    f = tmp_path / "s.toml"
    f.write_text(text + '\n[protocols.paper.single-pass]\nattacks = ["fgsm", "pgd40"]\n')
    paper = next(p for p in load_study(f).protocols if p.name == "paper")
    assert paper.groups[0].attacks == ("fgsm", "pgd40")
    f.write_text(text + '\n[protocols.paper.single-pass]\nattacks = ["fgsm", "pgd4o"]\n')
    with pytest.raises(ConfigError, match="unknown attack 'pgd4o'"):
        load_study(f)
