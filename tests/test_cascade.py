"""The cascade (cheap to expensive, survivors only) against individual mode, randomness that
modules own, the paired statistics of the audit, the cost-weighted progress and old results."""

import json

import pytest
import torch
from torch import nn

from spikeguard.attacks import FGSM, PGD, Attack, Transfer
from spikeguard.attacks.adaptive import NoiseFreeTwin
from spikeguard.evaluation import evaluate_robustness
from spikeguard.evaluation.audit import Paired, verdict
from spikeguard.evaluation.engine import attack_cost, cascade_order
from spikeguard.evaluation.progress import EvalProgress, approximately, format_seconds
from spikeguard.evaluation.stats import mcnemar_exact, paired_counts
from spikeguard.models import create_model
from spikeguard.randomness import detect_randomness

torch.set_num_threads(1)


def _linear():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).eval()
    x = torch.rand(24, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 10  # three clean mistakes: never attacked
    return model, x, y


def _deterministic_attacks(model, eps):
    # per-sample deterministic attacks: their result on a sample does not depend on the batch
    return [("pgd8", PGD(model, eps, alpha=eps / 4, steps=8, random_start=False)),
            ("fgsm", FGSM(model, eps)),
            ("pgd3", PGD(model, eps, alpha=eps / 2, steps=3, random_start=False))]


def _compare(model, x, y, attacks, **kw):
    ind = evaluate_robustness(model, x, y, attacks, individual=True, **kw)
    cas = evaluate_robustness(model, x, y, attacks, individual=False, **kw)
    return ind, cas


def test_cascade_worst_case_equals_individual_on_a_deterministic_model():
    model, x, y = _linear()
    eps = 4 / 255
    ind, cas = _compare(model, x, y, _deterministic_attacks(model, eps), eps=eps, batch_size=10)
    assert cas.mode == "cascade" and ind.mode == "individual"
    assert list(cas.results) == ["fgsm", "pgd3", "pgd8"]  # cheap to expensive
    assert torch.equal(cas.worst_case(), ind.worst_case())
    assert 0 < cas.accuracy("worst_case") < cas.accuracy("clean")
    # the same first breaker per sample as individual mode read in the cascade's order
    assert cas.broken_by() == ind.broken_by(list(cas.results))
    total = {m: sum(r.n_attacked for r in rep.results.values()) for m, rep in (("i", ind), ("c", cas))}
    assert total["c"] < total["i"] == 3 * 21
    # each attack ran exactly on the samples still robust after the ones before it
    alive = cas.clean.any(0)
    for name, r in cas.results.items():
        assert torch.equal(r.ran, alive) and r.n_attacked == int(alive.sum())
        alive = alive & r.robust.any(0)
    doc = cas.to_dict()
    assert doc["mode"] == "cascade" and set(doc["table"]) == {"clean", "worst case"}
    broke = {k: a["cascade"]["broke"] for k, a in doc["attacks"].items()}
    assert all(a["accuracy"] is None for a in doc["attacks"].values())
    by = doc["per_sample"]["broken_by"]
    assert sum(broke.values()) == sum(b not in (None, "clean") for b in by) and by[:3] == ["clean"] * 3
    assert "fgsm" not in doc["per_sample"]  # no per-attack per-sample rates in a cascade
    text = cas.format_table()
    assert f"broke {broke['fgsm']} of 21 attacked" in text and "not comparable" in text
    assert ind.to_dict()["table"]["FGSM"] == pytest.approx(ind.results["fgsm"].accuracy)


def test_cascade_worst_case_equals_individual_on_a_noisy_lif_model():
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=4, T=4, neuron="noisy_lif", in_channels=1, image_size=4, hidden=(32,),
                         neuron_kw={"sigma": 0.3}).eval()
    x = torch.rand(16, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 32 / 255
    twin = NoiseFreeTwin(model)
    attacks = [("twin8", Transfer(model, twin, eps, attack=PGD(twin, eps, alpha=eps / 4, steps=8, random_start=False))),
               "fgsm",  # first in the cascade: on every sample in both modes
               ("twin2", Transfer(model, twin, eps, attack=PGD(twin, eps, alpha=eps, steps=2, random_start=False)))]
    ind, cas = _compare(model, x, y, attacks, eps=eps, eot=2, passes=4, batch_size=8, seed=5)
    assert cas.stochastic and cas.passes == 4 and list(cas.results) == ["fgsm", "twin2", "twin8"]
    assert torch.equal(cas.worst_case(), ind.worst_case())
    assert cas.broken_by() == ind.broken_by(list(cas.results))
    assert sum(r.n_attacked for r in cas.results.values()) < sum(r.n_attacked for r in ind.results.values())
    # a sample stays in the cascade while it is robust on at least one pass
    kept = cas.clean.any(0) & cas.results["fgsm"].robust.any(0)
    assert torch.equal(cas.results["twin2"].ran, kept)


def test_sharded_cascade_matches_one_call(tmp_path):
    from spikeguard.evaluation.sharded import evaluate_sharded

    model, x, y = _linear()
    attacks = _deterministic_attacks(model, 4 / 255)
    one = evaluate_robustness(model, x, y, attacks, eps=4 / 255, batch_size=10, individual=False)
    sh = evaluate_sharded(model, x, y, attacks, eps=4 / 255, batch_size=10, individual=False, journal=tmp_path / "j")
    assert sh.mode == "cascade" and torch.equal(sh.worst_case(), one.worst_case())
    for k in one.results:
        assert torch.equal(sh.results[k].ran, one.results[k].ran)
        assert sh.results[k].n_attacked == one.results[k].n_attacked
    assert json.dumps(sh.to_dict())  # JSON-able


class RandomShift(nn.Module):
    """Rolls each image by 0 or 1 pixel, drawn from a generator the module owns."""

    def __init__(self, seed=0, hidden=False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        if hidden:
            self.gens = [g]  # a generator the walk over the modules' attributes cannot find
        else:
            self.g = g

    def forward(self, x):
        g = self.gens[0] if hasattr(self, "gens") else self.g
        s = torch.randint(0, 2, (x.shape[0],), generator=g)
        return torch.stack([torch.roll(xi, int(si), -1) for xi, si in zip(x, s)])


class ZeroAttack(Attack):
    """Returns the clean images: robust must equal clean wherever clean and attacked share a draw."""

    def forward(self, images, labels):
        return images.clone()


def _shift_model(hidden=False):
    torch.manual_seed(3)
    return nn.Sequential(RandomShift(hidden=hidden), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_a_generator_owned_by_a_module_is_seeded_per_pass():
    model = _shift_model()
    x = torch.rand(40, 1, 1, 8)
    y = torch.zeros(40, dtype=torch.long)
    with torch.no_grad():
        y = nn.Sequential(*list(model)[1:])(x).argmax(1)  # the label of the unshifted image
    rnd = detect_randomness(model, x[:8])
    assert rnd.stochastic and "module-generator" in rnd.sources and rnd.controlled
    assert rnd.generators == ("0.g",)
    rep = evaluate_robustness(model, x, y, [("zero", ZeroAttack(model, 0.0))], passes=6, batch_size=16)
    assert rep.paired and rep.randomness["controlled"]
    assert 0 < rep.accuracy("clean") < 1 and (rep.clean.float().mean(0) % 1).any()  # it is random per pass
    # judged under the very draw of the clean pass: the zero attack costs nothing (not deflated)
    assert torch.equal(rep.results["zero"].robust, rep.clean)
    assert torch.equal(rep.worst_case(), rep.clean)
    assert model[0].g.initial_seed() == 0  # the module's own generator is handed back as it was


def test_uncontrolled_randomness_is_judged_over_independent_passes():
    model = _shift_model(hidden=True)
    x = torch.rand(40, 1, 1, 8)
    with torch.no_grad():
        y = nn.Sequential(*list(model)[1:])(x).argmax(1)
    rep = evaluate_robustness(model, x, y, [("zero", ZeroAttack(model, 0.0))], passes=6, batch_size=16)
    assert not rep.paired and "uncontrolled" in rep.randomness["sources"] and not rep.randomness["controlled"]
    assert "independent" in rep.randomness["seeding"]
    # per sample the worse pass rate of clean and attacked, never an AND of unrelated draws
    rate = rep.worst_case().float().mean(0)
    expected = torch.minimum(rep.clean.float().mean(0), rep.results["zero"].robust.float().mean(0))
    assert torch.equal(rate, expected)
    anded = (rep.clean & rep.results["zero"].robust).float().mean()
    assert rep.accuracy("worst_case") >= float(anded)


def test_mcnemar_exact_against_hand_computed_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(1, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(3, 3) == 1.0
    a = torch.tensor([[0, 0, 1, 1, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0, 1]], dtype=torch.bool)
    assert paired_counts(a, b) == (2, 1)  # A breaks samples 0 and 4 alone, B breaks sample 3 alone


def test_audit_verdict_uses_the_paired_test_and_names_numbers_in_order():
    from spikeguard.evaluation.engine import AttackResult

    def res(bits):
        return AttackResult("x", torch.tensor([bits], dtype=torch.bool), 8 / 255, "white-box", "")

    a, b = res([0] * 3 + [1] * 17), res([1] * 20)  # A breaks 3 samples B does not: p = 0.25
    pr = Paired.of("A", a, "B", b)
    assert (pr.a_only, pr.b_only, pr.p) == (3, 0, pytest.approx(0.25))
    c = verdict("k", "t", False, {}, "fine", "A is stronger. More text.", pr)
    assert c.status == "PASS" and c.numbers["within_noise"]
    assert "3 broken by A only, 0 by B only, exact McNemar p = 0.25" in c.message
    strong = Paired.of("A", res([0] * 12 + [1] * 8), "B", b)  # 12 vs 0: p = 0.00049
    assert verdict("k", "t", False, {}, "fine", "A is stronger.", strong).status == "WARN"


def test_surrogate_check_names_the_weaker_width_first():
    from spikeguard.evaluation.audit import AuditSettings, check_surrogate
    from spikeguard.evaluation.engine import AttackResult

    def res(n_robust):
        return AttackResult("x", torch.tensor([[1] * n_robust + [0] * (20 - n_robust)], dtype=torch.bool), 8 / 255,
                            "white-box", "", settings={"alpha": 0.01})

    results = {"w1": res(18), "w2": res(4)}
    st = AuditSettings(eps=8 / 255, steps=10, tolerance=1.0, chance_margin=0.05, zero_grad_limit=0.01, num_classes=10,
                       sweep=(), sweep_names=(), pair=("a", "b"), eot_pair=None, eot_check=8, zero_grad=(0, 0, 1),
                       surrogate_runs=((("triangle", 1.0), "w1"), (("triangle", 2.0), "w2")))
    c = check_surrogate(results, st)
    assert c.status == "WARN"
    # the weaker width (triangle:1, 90%) is named first, and so are its counts
    assert "triangle:1 90.0% vs triangle:2 20.0%" in c.message
    assert "0 broken by triangle:1 only, 14 by triangle:2 only" in c.message


def test_cost_rank_orders_the_cascade_and_known_noise_goes_last():
    model, _, _ = _linear()
    named = [("pgd20", PGD(model, 0.03, steps=20)), ("fgsm", FGSM(model, 0.03)), ("pgd5", PGD(model, 0.03, steps=5))]
    assert [k for k, _ in cascade_order(named)] == ["fgsm", "pgd5", "pgd20"]
    assert attack_cost(named[0][1]) == 20
    late = FGSM(model, 0.03)
    late.threat = "known-noise"
    assert [k for k, _ in cascade_order([("k", late)] + named)][-1] == "k"


def test_eta_weighs_attacks_by_cost_and_shrinks_as_samples_break():
    bar = EvalProgress(20, enabled=False)
    bar.set_attacks(["cheap", "dear"], {"cheap": 1.0, "dear": 10.0}, clean_cost=0.25)
    assert bar.work() == (0.0, None)
    bar.step("clean", 10, seconds=0.025)
    bar.step("cheap", 10, attacked=10, seconds=0.1)  # 0.01 s per cost unit
    done, left = bar.work()
    assert done == pytest.approx(0.125)
    # left: 10 clean (0.025) + 10 cheap (0.1) + 20 dear at 10 units x 0.01 s (2.0)
    assert left == pytest.approx(0.025 + 0.1 + 2.0)
    bar.step("dear", 10, attacked=2, seconds=0.2)  # a cascade: only 2 of 10 survived
    _, left2 = bar.work()
    assert left2 == pytest.approx(0.025 + 0.1 + 10 * 0.2 * 0.1)


def test_duration_phrases_read_well():
    assert format_seconds(0.4) == "less than 1 s" and approximately(0.4) == "less than 1 s"
    assert approximately(42) == "about 42 s" and approximately(600) == "about 10 min"


def test_old_result_versions_still_read():
    from spikeguard.errors import DataError
    from spikeguard.evaluation.results import read_results

    v2 = {"schema": "spikeguard.robustness", "version": 2, "model": "m", "provenance": {}, "table": {"clean": 0.9},
          "report": {"eps": 8 / 255, "attacks": {"fgsm": {"accuracy": 0.5}}}}
    [doc] = read_results(v2)
    assert doc["report"]["mode"] == "individual" and doc["report"]["attacks"]["fgsm"]["accuracy"] == 0.5
    v1 = {"checkpoint": "runs/x", "table": {"clean": 0.9}, "report": {"eps": 8 / 255, "attacks": {"fgsm": {}}}}
    assert read_results(v1)[0]["version"] == 1
    with pytest.raises(DataError):
        read_results({**v2, "version": 99})


def test_cli_cascade_is_the_default_and_individual_flag_works(tmp_path, capsys):
    from spikeguard.checkpoint import save_checkpoint
    from spikeguard.cli.main import main
    from spikeguard.config import load_config
    from spikeguard.jobs.train import build_model

    cfg = load_config(None, ["data.name=digits", "model.name=small_conv", "model.T=2",
                             "model.kw={channels = [4, 8, 8]}"])
    save_checkpoint(tmp_path / "run", build_model(cfg), cfg)
    common = ["evaluate", "--checkpoint", str(tmp_path / "run"), "--attacks", "fgsm,pgd2", "--n-samples", "20",
              "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "at most that: in the cascade" in err and "about less" not in err and "about under" not in err
    assert main(common + ["--individual", "--out", str(tmp_path / "i")]) == 0
    c = json.loads((tmp_path / "c" / "robustness.json").read_text())
    i = json.loads((tmp_path / "i" / "robustness.json").read_text())
    assert c["version"] == 3 and c["report"]["mode"] == "cascade" and i["report"]["mode"] == "individual"
    assert list(c["table"]) == ["clean", "worst case"] and list(i["table"]) == ["clean", "FGSM", "PGD2", "worst case"]
    assert c["table"]["worst case"] == pytest.approx(i["table"]["worst case"], abs=0.1)
    assert c["provenance"]["mode"] == "cascade"


def test_strong_protocol_square_has_autoattack_budget_and_runs_after_the_gradient_attacks():
    from spikeguard.attacks import Square, build_attack
    from spikeguard.protocols import STRONG_SQUARE_QUERIES, get_protocol

    g = get_protocol("strong").groups[0]
    assert g.attack_kw["square"] == {"queries": STRONG_SQUARE_QUERIES} and STRONG_SQUARE_QUERIES == 5000
    model, _, _ = _linear()
    sq = Square(model, 0.03, queries=STRONG_SQUARE_QUERIES)
    named = [("square", sq), ("pgd50-r3", build_attack("pgd50-r3", model, 0.03)), ("apgd-ce", build_attack("apgd-ce", model, 0.03))]
    # 5,000 forward-only queries rank above every gradient attack of the suite: the cascade gives it the survivors
    assert [k for k, _ in cascade_order(named)][-1] == "square"
    # a study's override of the budget still wins
    assert get_protocol("strong", {"attack_kw": {"square": {"queries": 300}}}).groups[0].attack_kw["square"] == {"queries": 300}


def test_cli_strong_suite_holds_the_snn_attacks_and_square_budget_of_the_protocol():
    from spikeguard.jobs.evaluate import EvaluationRequest
    from spikeguard.protocols import STRONG_SQUARE_QUERIES, get_protocol

    req = EvaluationRequest(suite="strong")
    names = req.attack_names()
    assert {"assg", "sa-pgd", "pdsg", "apgd-t", "square"} <= set(names)
    # every attack of the study's strong protocol is in `evaluate --suite strong`
    assert set(get_protocol("strong").groups[0].attacks) <= set(names)
    assert req.attack_kw() == {"square": {"queries": STRONG_SQUARE_QUERIES}}
    assert EvaluationRequest(suite="strong", square_queries=300).attack_kw() == {"square": {"queries": 300}}
    assert EvaluationRequest(attacks="fgsm,square").attack_kw() is None
