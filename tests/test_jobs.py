"""The jobs layer called directly (no command line): written results, refusals, one provenance assembler."""

import ast
import json
from pathlib import Path

import pytest
import torch

import spikeguard
from spikeguard.checkpoint import save_checkpoint
from spikeguard.config import load_config
from spikeguard.errors import SpikeguardError
from spikeguard.jobs import AuditRequest, EvaluationRequest, run_audit, run_evaluation
from spikeguard.jobs.train import build_model

BASE_KEYS = {"checkpoint", "checkpoint_id", "command", "protocol", "attacks", "eps", "n_samples", "seed", "passes",
             "eot", "data", "software", "date"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = load_config(None, ["data.name=digits", "model.name=small_conv", "model.T=2",
                             "model.kw={channels = [4, 8, 8]}", "neuron.kind=lif"])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("jobs") / "run"
    save_checkpoint(path, build_model(cfg).eval(), cfg)
    return path


def _request(run, out, **kw):
    return EvaluationRequest(checkpoint=str(run), attacks="fgsm,pgd2", eps=0.1, n_samples=12, batch_size=6,
                             device="cpu", out=str(out), argv=["evaluate", "--checkpoint", str(run)], **kw)


def test_run_evaluation_writes_the_result_and_refuses_to_replace_it(run, tmp_path):
    out = tmp_path / "ev"
    said = []
    res = run_evaluation(_request(run, out), log=said.append, echo=said.append)
    doc = json.loads((out / "robustness.json").read_text())
    assert res.path == out / "robustness.json" and doc == json.loads(json.dumps(res.document))
    assert doc["schema"] == "spikeguard.robustness" and doc["command"] == "evaluate"
    assert set(doc["provenance"]) >= BASE_KEYS and doc["provenance"]["attacks"] == ["fgsm", "pgd2"]
    assert doc["provenance"]["checkpoint_id"] and doc["provenance"]["mode"] == "cascade"
    assert doc["report"]["n_samples"] == 12 and not list(out.glob(".evaluate-*"))  # journal dropped
    assert any(s.startswith("output folder: ") for s in said) and any("robust accuracy of" in s for s in said)
    before = (out / "robustness.json").read_bytes()
    with pytest.raises(SpikeguardError, match="already exists"):
        run_evaluation(_request(run, out))
    assert (out / "robustness.json").read_bytes() == before
    again = run_evaluation(_request(run, out, overwrite=True))
    assert again.document["report"]["worst_case"] == doc["report"]["worst_case"]  # same settings, same numbers


def test_run_evaluation_default_folder_and_event_ks_error(run):
    res = run_evaluation(EvaluationRequest(checkpoint=str(run), attacks="fgsm", eps=8 / 255, n_samples=6,
                                           batch_size=6, device="cpu"))
    assert res.path.parent.parent == run / "evaluation" and res.path.parent.name.endswith("-fgsm-eps8")
    with pytest.raises(SpikeguardError, match="--event-ks"):
        EvaluationRequest(event_ks="1,x").event_budgets()


def test_run_audit_writes_audit_json_with_the_same_provenance_fields(run, tmp_path):
    req = AuditRequest(checkpoint=str(run), eps=0.1, n_samples=6, batch_size=6, steps=1, square_queries=5,
                       device="cpu", out=str(tmp_path / "a"), argv=["audit"])
    res = run_audit(req)
    doc = json.loads(res.path.read_text())
    assert doc["schema"] == "spikeguard.audit" and doc["audit"]["verdict"] == res.audit.to_dict()["verdict"]
    assert set(doc["provenance"]) == BASE_KEYS | {"steps"} and doc["provenance"]["command"] == "spikeguard audit"
    with pytest.raises(SpikeguardError, match="already exists"):
        run_audit(req)
    with pytest.raises(SpikeguardError, match="--steps >= 1"):
        run_audit(req.replace(steps=0, out=str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()


def test_study_group_and_cli_share_the_provenance_record(run, tmp_path):
    from spikeguard.checkpoint import load_run
    from spikeguard.data import load_dataset
    from spikeguard.protocols import EvalGroup, Protocol
    from spikeguard.jobs.study.stages import _run_group

    model = load_run(run).model.eval()
    ds = load_dataset("digits", "test", subset=6, seed=0)
    group = EvalGroup(name="g", attacks=("fgsm",), eot=1, passes=1, alpha=0.01)
    doc = _run_group(model, ds.float_images(), ds.labels, group, Protocol("p", "P", "", (group,)),
                     {"batch_size": 6, "seed": 0}, 0.1, tmp_path / "s" / "g.json", run, None, "", "cpu",
                     lambda _m: None, False, data_info={"name": "digits", "split": "test", "n_samples": 6, "seed": 0})
    cli = run_evaluation(_request(run, tmp_path / "ev").replace(attacks="fgsm"))
    study_prov, cli_prov = doc["provenance"], cli.document["provenance"]
    assert set(study_prov) >= BASE_KEYS and set(cli_prov) >= BASE_KEYS
    assert study_prov["checkpoint_id"] == cli_prov["checkpoint_id"] and study_prov["protocol"] == cli_prov["protocol"]


def test_provenance_is_assembled_in_one_function():
    """``evaluation.results.provenance`` is called from exactly one function in the package."""
    callers = []
    for f in Path(spikeguard.__file__).parent.rglob("*.py"):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(fn):
                    if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "provenance":
                        if not (isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
                                and n.func.value.id in ("t", "target", "self")):
                            callers.append(f"{f.name}:{fn.name}")
    assert callers == ["results.py:evaluation_provenance"], callers


def test_run_analysis_writes_the_result_with_its_provenance_and_refuses_to_replace_it(run, tmp_path):
    from spikeguard.jobs import AnalysisRequest, run_analysis

    out = tmp_path / "an"
    req = AnalysisRequest(what="membrane", checkpoint=[f"base={run}"], n=8, bins=10, device="cpu", out=str(out),
                          argv=["analyze", "membrane", "-k", f"base={run}"])
    said = []
    res = run_analysis(req, log=said.append)
    doc = json.loads((out / "membrane.json").read_text())
    assert res.out == out and set(res.results) == {"membrane"} and doc == json.loads(json.dumps(res.results["membrane"]))
    assert set(doc["models"]) == {"base"} and doc["num_samples"] == 8
    prov = doc["provenance"]
    assert prov["checkpoints"] == {str(run): prov["checkpoints"][str(run)]} and prov["n_samples"] == 8
    assert prov["command"].startswith("spikeguard analyze membrane") and prov["dataset"] == "digits"
    assert any(line.startswith("base: near-threshold share") for line in said)
    with pytest.raises(SpikeguardError, match="overwrite"):
        run_analysis(req)
    with pytest.raises(SpikeguardError, match="needs at least one checkpoint"):
        run_analysis(AnalysisRequest(what="jacobian", device="cpu", out=str(tmp_path / "none")))
    assert not (tmp_path / "none").exists()
