"""The audit passes a plain linear classifier and flags gradient-masked versions of it."""

import json

import pytest
import torch

from spikeguard.evaluation import audit_robustness, evaluate_robustness
from spikeguard.evaluation.audit import AuditSettings, check_surrogate, surrogate_sweep, zero_gradient_share
from spikeguard.evaluation.engine import AttackResult

from planted import Centroid, Rounded, StopGrad, centroid_data

torch.set_num_threads(1)


def _data(n=150, k=3, seed=0):
    return centroid_data(n, k, seed)


# eps where the plain classifier is breakable (its samples sit ~38/255 from the boundary)
FAST = dict(eps=48 / 255, alpha=0.1, steps=5, square_queries=300, passes=1, eot=1)


def test_audit_passes_a_plain_linear_classifier():
    mu, x, y = _data()
    model = Centroid(mu)
    audit = audit_robustness(model, x, y, **FAST)
    statuses = {c.key: c.status for c in audit.checks}
    assert statuses == {"eps_sweep": "PASS", "iterative": "PASS", "steps": "PASS", "eot": "SKIP", "apgd": "PASS",
                        "black_box": "PASS", "zero_grad": "PASS", "surrogate": "SKIP", "budget": "PASS"}, audit.format()
    assert audit.verdict == "PASS"
    sweep = audit.check("eps_sweep").numbers["accuracy"]
    assert sweep[0] > 0.9 and sweep[-1] <= 1 / 3 + 0.05
    json.dumps(audit.to_dict())  # JSON-ready


@pytest.mark.parametrize("masked", [Rounded, StopGrad])
def test_audit_flags_a_gradient_masked_model(masked):
    mu, x, y = _data()
    model = masked(mu)
    with torch.no_grad():
        assert (model(x).argmax(1) == Centroid(mu)(x).argmax(1)).float().mean() > 0.95  # same classifier
    audit = audit_robustness(model, x, y, **FAST)
    statuses = {c.key: c.status for c in audit.checks}
    assert audit.verdict == "WARN"
    assert statuses["zero_grad"] == "WARN"
    assert statuses["black_box"] == "WARN"   # the score-based Square attack does what gradients cannot
    assert statuses["eps_sweep"] == "WARN"   # nothing close to chance at 64/255
    assert statuses["budget"] == "PASS"
    assert audit.check("zero_grad").numbers["share_ce"] == 1.0
    assert "masking" in audit.check("black_box").message


def test_audit_reuses_a_report_and_checks_its_budgets():
    mu, x, y = _data(n=60)
    model = Centroid(mu)
    rep = evaluate_robustness(model, x, y, ["fgsm", "pgd5", "pgd10", "apgd-ce10", "square100"])
    audit = audit_robustness(model, x, y, report=rep, steps=3, passes=1)
    assert audit.settings["used_report"]
    steps = audit.check("steps").numbers
    assert "pgd5" in steps and "pgd10" in steps  # the report's PGD-k / PGD-2k pair is used
    assert {"fgsm", "pgd5", "square100"} <= set(audit.check("budget").numbers["attacks_checked"])
    assert "square300" not in (audit.runs.results if audit.runs else {})  # no extra black-box run needed


def test_zero_gradient_share_counts_samples():
    mu, x, y = _data(n=30)
    assert zero_gradient_share(Centroid(mu), x, y) == (0.0, 0.0)
    assert zero_gradient_share(StopGrad(mu), x, y) == (1.0, 1.0)


def test_cli_audit(tmp_path, capsys):
    from spikeguard.checkpoint import save_checkpoint
    from spikeguard.cli.main import main
    from spikeguard.config import load_config
    from spikeguard.jobs.train import build_model

    cfg = load_config(None, ["data.name=digits", "model.name=small_conv", "model.T=2",
                             "model.kw={channels = [4, 8, 8]}"])
    save_checkpoint(tmp_path / "run", build_model(cfg), cfg)
    rc = main(["audit", "--checkpoint", str(tmp_path / "run"), "--n-samples", "20", "--steps", "2",
               "--square-queries", "20", "--no-progress"])
    assert rc == 0
    # each audit writes into a folder of its own (issue 14): RUN/evaluation/<time>-audit-eps8/
    (path,) = (tmp_path / "run" / "evaluation").glob("*-audit-eps8/audit.json")
    doc = json.loads(path.read_text())
    assert doc["audit"]["verdict"] in ("PASS", "WARN")
    assert len(doc["audit"]["checks"]) == 9  # the eight plus the surrogate-width check
    assert "robustness audit" in capsys.readouterr().out
    assert main(["audit", "--checkpoint", str(tmp_path / "run"), "--steps", "0"]) == 2


def test_audit_flags_a_step_size_too_small_for_the_budget():
    # PGD-5 with step 0.01 can travel 0.05 + its random start: not enough for eps = 48/255
    mu, x, y = _data()
    audit = audit_robustness(Centroid(mu), x, y, **(FAST | {"alpha": 0.01}))
    assert audit.check("iterative").status == "WARN"
    assert "step size too small" in audit.check("iterative").message


class TinySNN(torch.nn.Module):
    """Linear -> spikeguard LIF (T=4, triangle surrogate) -> rate -> linear, on the centroid data."""

    def __init__(self, d=16, h=32, k=3, T=4):
        super().__init__()
        from spikeguard.neurons import LIF

        self.T, self.fc1, self.lif, self.fc2 = T, torch.nn.Linear(d, h), LIF(), torch.nn.Linear(h, k)

    def forward(self, x):
        z = self.fc1(x.flatten(1)).unsqueeze(0).expand(self.T, -1, -1)
        return self.fc2(self.lif(z).mean(0))


def _trained_snn(x, y):
    torch.manual_seed(0)
    model = TinySNN()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_surrogate_check_runs_pgd_per_width_on_a_spiking_model():
    mu, x, y = _data()
    model = _trained_snn(x, y)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95
    eps = 48 / 255
    audit = audit_robustness(model, x, y, eps=eps, steps=5, square_queries=50, passes=1, eot=1,
                             sweep=(8 / 255, 64 / 255))
    from spikeguard.protocols import width_sweep

    assert surrogate_sweep(model) == list(width_sweep())  # the strong suite's: every registered kind
    assert [w for n, w in surrogate_sweep(model) if n == "triangle"] == [0.25, 0.5, 1.0, 2.0]
    widths = [f"{n}:{w:g}" for n, w in width_sweep()]
    assert audit.settings["surrogate_widths"] == widths
    check = audit.check("surrogate")
    assert list(check.numbers["accuracy"]) == widths and all(w in check.message for w in widths)
    # a narrow attack surrogate leaves samples robust where others reach 0%
    assert check.status == "WARN", check.message
    assert check.numbers["spread_points"] > 10
    assert "sg-ensemble" in check.message
    runs = audit.runs.results
    assert runs["pgd5-sg-triangle1"].settings["steps"] == 5
    assert abs(runs["pgd5-sg-triangle1"].settings["alpha"] - 2.5 * eps / 5) < 1e-9  # the eps-following step
    assert "pgd5-sg-triangle0.25" in audit.check("budget").numbers["attacks_checked"]
    assert "pgd5-sg-triangle0.25" not in audit.check("iterative").numbers["iterative"]


def test_surrogate_check_is_skipped_for_a_plain_module():
    mu, x, y = _data(n=30)
    audit = audit_robustness(Centroid(mu), x, y, **FAST)
    check = audit.check("surrogate")
    assert check.status == "SKIP"
    assert "spiking neurons" in check.message and "plain nn.Module" in check.message
    assert audit.settings["surrogate_widths"] == []


def _settings(**kw):
    base = dict(eps=8 / 255, steps=10, tolerance=1.0, chance_margin=0.05, zero_grad_limit=0.01, num_classes=10,
                sweep=(8 / 255,), sweep_names=("pgd10@8",), pair=("pgd10", "pgd20"), eot_pair=None, eot_check=8,
                zero_grad=(0.0, 0.0, 1))
    return AuditSettings(**(base | kw))


def _result(correct: int, n: int = 200) -> AttackResult:
    robust = torch.zeros(1, n, dtype=torch.bool)
    robust[0, :correct] = True
    return AttackResult(name="x", robust=robust, eps=8 / 255, threat="white-box", description="pgd",
                        max_linf=8 / 255, iterative=True, family="pgd")


@pytest.mark.parametrize("accs, status", [((20, 69, 25), "WARN"),   # 10% vs 34.5% of 200: far beyond noise
                                          ((40, 44, 42), "PASS")])  # 20% vs 22%: beyond 1 pt, within noise
def test_check_surrogate_warns_only_beyond_noise(accs, status):
    widths = [("triangle", 1.0), ("triangle", 0.25), ("triangle", 4.0)]
    names = [f"sg{i}" for i in range(3)]
    results = {n: _result(c) for n, c in zip(names, accs)}
    check = check_surrogate(results, _settings(surrogate_runs=tuple(zip(widths, names))))
    assert check.status == status, check.message
    assert check.numbers["strongest"] == "triangle:1" and check.numbers["weakest"] == "triangle:0.25"
    if status == "WARN":
        assert "triangle:0.25 34.5%" in check.message and "triangle:1 10.0%" in check.message
        assert "sg-ensemble" in check.message
        assert abs(check.numbers["spread_points"] - 24.5) < 1e-4
    else:
        assert check.numbers.get("within_noise") is True and "within noise" in check.message
