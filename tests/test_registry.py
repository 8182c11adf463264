"""One Registry type for every extension point: its rules, and a dataset, an analysis and an
audit check each added as one registered function that the library then uses end to end."""

import argparse
import json

import pytest
import torch

from spikeguard.errors import DataError, SpikeguardError
from spikeguard.registry import Registry

from planted import Centroid, centroid_data

torch.set_num_threads(1)


def test_registry_rules():
    reg: Registry = Registry("widget")

    @reg.register("beta", aliases=("b",))
    def beta():
        """The second widget. More text."""

    @reg.register("alpha", description="given line")
    def alpha():
        """Ignored."""

    assert reg.names() == ["alpha", "beta"] and len(reg) == 2 and "b" in reg and "gamma" not in reg
    assert reg.describe() == [("alpha", "given line"), ("beta", "The second widget.")]
    assert reg.get("B") is beta and [n for n, _ in reg.items()] == ["alpha", "beta"]
    with pytest.raises(ValueError, match=r"'beta' is registered twice: by .*beta and by .*other"):
        @reg.register("beta")
        def other():
            pass
    with pytest.raises(ValueError, match="'b' is registered twice"):
        reg.add("delta", object(), aliases=("b",))
    with pytest.raises(SpikeguardError) as e:
        reg.get("gamma")
    assert str(e.value) == "unknown widget 'gamma'; known: alpha, beta" and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)  # callers that caught ValueError before still do
    reg.unregister("b")
    assert reg.names() == ["alpha"] and "b" not in reg


def test_builtin_registries_raise_on_duplicates_and_list_sorted():
    from spikeguard.models import register_model
    from spikeguard.training.strategies import Strategy, list_strategies, register_strategy

    with pytest.raises(ValueError, match="registered twice"):
        register_model("small_conv")(lambda **kw: None)
    with pytest.raises(ValueError, match="registered twice"):  # strategies used to overwrite silently
        register_strategy("bptt")(type("Again", (Strategy,), {}))
    assert list_strategies() == sorted(list_strategies())


@pytest.fixture
def tiny_dataset():
    from spikeguard.data import DatasetInfo, ImageDataset
    from spikeguard.data.catalog import DATASET_LOADERS, DatasetRequest, register_dataset

    @register_dataset("tiny-bars", aliases=("bars",), info=DatasetInfo("tiny-bars", ("h", "v"), (1, 4, 4), (0.5,), (0.5,)))
    def load_tiny_bars(req: DatasetRequest) -> ImageDataset:
        """Horizontal vs vertical bars on a 4x4 grid."""
        x = torch.zeros(8, 1, 4, 4)
        x[0::2, :, 1, :] = 1.0
        x[1::2, :, :, 1] = 1.0
        y = torch.arange(8) % 2
        return ImageDataset(x, y, ["h", "v"], (0.5,), (0.5,), name=req.name)

    yield load_tiny_bars
    DATASET_LOADERS.unregister("tiny-bars")


def test_a_dataset_is_one_registered_loader(tiny_dataset, capsys):
    from spikeguard.cli.main import main
    from spikeguard.data import dataset_info, load_dataset

    ds = load_dataset("BARS", "test", subset=4)
    assert ds.name == "tiny-bars" and len(ds) == 4 and ds.classes == ["h", "v"]
    assert dataset_info("tiny-bars").model_kw()["image_size"] == 4
    with pytest.raises(DataError, match="takes no data options"):
        load_dataset("tiny-bars", frames=3)
    assert main(["list", "datasets"]) == 0
    assert any(ln.split()[:1] == ["tiny-bars"] and "bars on a 4x4 grid" in ln
               for ln in capsys.readouterr().out.splitlines())


def test_an_analysis_is_one_registered_function(tmp_path, capsys):
    from spikeguard.analysis.registry import ANALYSES, AnalysisContext, register_analysis
    from spikeguard.cli.main import main

    @register_analysis("file_count", models=False, files=True)
    def file_count(ctx: AnalysisContext) -> dict:
        """How many result files were given."""
        return {"analysis": "file_count", "count": len(ctx.files), "files": []}

    try:
        out = tmp_path / "out"
        assert main(["analyze", "file_count", "a.json", "b.json", "--out", str(out)]) == 0
        res = json.loads((out / "file_count.json").read_text())
        assert res["count"] == 2 and res["provenance"]["inputs"] == ["a.json", "b.json"]
        assert main(["list", "analyses"]) == 0
        assert "How many result files were given." in capsys.readouterr().out
    finally:
        ANALYSES.unregister("file_count")
    with pytest.raises(SystemExit):  # gone from the command line again
        main(["analyze", "file_count", "a.json"])


def test_an_audit_check_is_one_registered_function():
    from spikeguard.evaluation import audit_robustness
    from spikeguard.evaluation.audit import AUDIT_CHECKS, PASS, WARN, Check, register_check

    @register_check("clean_high", order=5)
    def check_clean_high(results, st) -> Check:
        """PGD at the largest sweep budget breaks most samples."""
        acc = results[st.sweep_names[-1]].accuracy
        return Check("clean_high", "PGD breaks most samples", PASS if acc < 0.5 else WARN, {"accuracy": acc},
                     f"robust accuracy {100 * acc:.0f}% at the largest budget")

    mu, x, y = centroid_data(30, 3, 0)
    try:
        audit = audit_robustness(Centroid(mu), x, y, eps=48 / 255, alpha=0.1, steps=2, square_queries=20, passes=1,
                                 eot=1, sweep=(48 / 255,))
    finally:
        AUDIT_CHECKS.unregister("clean_high")
    assert audit.checks[0].key == "clean_high" and audit.check("clean_high").status == PASS
    assert "robust accuracy 0% at the largest budget" in audit.format()
    assert "clean_high" not in AUDIT_CHECKS


def test_surrogate_sweeps_read_the_surrogate_registry():
    from spikeguard.attacks.adaptive import SurrogateEnsemble
    from spikeguard.neurons.surrogate import SurrogateKind, register_surrogate, unregister_surrogate
    from spikeguard.protocols import width_sweep

    kinds = {n for n, _ in width_sweep()}
    assert {"triangle", "sigmoid", "atan", "rectangle", "gaussian", "ste"} <= kinds

    @register_surrogate
    class Flat(SurrogateKind):
        """A test surrogate."""

        name = "flat_registry_test"

        @staticmethod
        def derivative(x, w):
            return torch.full_like(x, 1.0 / w)

    try:
        assert [w for n, w in width_sweep() if n == "flat_registry_test"] == [0.25, 1.0, 2.0]
        ens = SurrogateEnsemble(torch.nn.Linear(2, 2), 0.1)
        assert [m.width for m in ens.members if m.name == "flat_registry_test"] == [0.5, 1.0, 2.0]
    finally:
        unregister_surrogate("flat_registry_test")
    with pytest.raises(SpikeguardError, match="unknown surrogate"):
        SurrogateEnsemble(torch.nn.Linear(2, 2), 0.1, members=[("flat_registry_test", 1.0)])
