import json
import subprocess
import sys

import pytest

from spikeguard.cli.main import main


def test_demo_end_to_end_writes_valid_json_and_png(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--epochs", "1", "--eps", "8,32", "--eot", "2", "--passes", "2", "--n-test", "40",
               "--T", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["epochs"] == 1
    for name in ("vanilla", "tgo"):
        m = res["models"][name]
        assert 0.0 <= m["clean"] <= 1.0
        assert 0.0 <= m["near_threshold"] <= 1.0
        assert set(m["attacks"]) == {"fgsm", "pgd10"}
        assert set(m["attacks"]["fgsm"]) == {"8/255", "32/255"}
        for acc in m["attacks"]["pgd10"].values():
            assert 0.0 <= acc <= 1.0
    assert res["models"]["tgo"]["stochastic"] and not res["models"]["vanilla"]["stochastic"]
    # the result schema: provenance per model, and analyze sweep reads it with its sample count
    assert res["schema"] == "spikeguard.demo" and res["version"] == 2
    prov = res["models"]["tgo"]["provenance"]
    assert prov["n_samples"] == 40 and prov["protocol"] == "demo-stream" and prov["checkpoint_id"]
    from spikeguard.analysis.sweep import load_sweep_records

    assert {r.n_samples for r in load_sweep_records([out / "results.json"])} == {40}
    png = (out / "potentials.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    printed = capsys.readouterr().out
    assert "clean accuracy" in printed and "FGSM eps=8/255" in printed


@pytest.mark.parametrize("args, msg", [
    (["demo", "--eps", "300"], "outside [0, 1]"),
    (["demo", "--epochs", "0"], "positive integer"),
    (["demo", "--eps", "abc"], "cannot parse eps"),
])
def test_demo_rejects_bad_flags_with_one_line_error(args, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "spikeguard", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    assert "demo" in r.stdout and "Threshold" in r.stdout
