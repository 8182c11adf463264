"""Checkpoints (safetensors + JSON) and experiment runs: round trip, errors, exact resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

import spikeguard
from spikeguard.checkpoint import load_run, load_training_state, load_weights, save_checkpoint
from spikeguard.cli.main import main as cli_main
from spikeguard.config import FORMAT_VERSION, load_config
from spikeguard.errors import CheckpointError, ConfigError
from spikeguard.jobs.train import build_model, run_experiment
from spikeguard.models import create_model

torch.set_num_threads(1)

TINY = ["data.name=digits", "model.name=small_conv", "model.T=2", "model.kw={channels = [4, 8, 8]}",
        "optim.epochs=3", "optim.batch_size=64", "data.subset=160", "data.test_subset=60",
        "checkpoint_every=1", "tgo.enabled=true", "tgo.schedule=dual", "neuron.kind=noisy_lif"]


def tiny_cfg(*extra):
    return load_config(None, TINY + list(extra))


def test_save_load_roundtrip(tmp_path):
    cfg = load_config(None, ["model.name=wrn16_4", "model.T=2", "data.name=cifar10"])
    model = build_model(cfg)
    model.train()
    model(torch.rand(4, 3, 32, 32))  # move BN running stats away from their init
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, model, cfg, {"epoch": 5, "optimizer": opt.state_dict(), "t": (1, 2.5, None)})
    run = load_run(tmp_path)
    assert run.config == cfg and run.meta["param_count"] == sum(p.numel() for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, run.model.state_dict()[k]), k
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), spikeguard.load(tmp_path)(x))
    assert torch.equal(run.model.mean, model.mean)  # normalisation restored from the spec
    st = load_training_state(tmp_path)
    assert st["epoch"] == 5 and st["t"] == (1, 2.5, None)
    opt2 = torch.optim.SGD(run.model.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(st["optimizer"])
    # only safetensors and JSON on disk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "state.json",
                                                           "state.safetensors"]


def test_wrong_architecture_is_clear(tmp_path):
    cfg = load_config(None, ["model.name=vgg_small", "model.T=2", "model.num_classes=10"])
    save_checkpoint(tmp_path, build_model(cfg), cfg)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(create_model("vgg_small", 100, T=2), tmp_path)
    with pytest.raises(CheckpointError, match="missing|unexpected"):
        load_weights(create_model("wrn16_4", 10, T=2), tmp_path)
    # a config.json that names another architecture than the weights
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["model_spec"]["kw"]["width"] = 0.5
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_run(tmp_path)


def test_corrupt_and_future_checkpoints(tmp_path):
    cfg = load_config(None, ["model.name=vgg_small", "model.T=2", "model.num_classes=10"])
    save_checkpoint(tmp_path, build_model(cfg), cfg, {"epoch": 1})
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_run(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(data)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_resume_gives_identical_weights(tmp_path):
    full = run_experiment(tiny_cfg(), tmp_path / "full", progress=False)

    class Crash(Exception):
        pass

    def crash(epoch, row):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        run_experiment(tiny_cfg(), tmp_path / "cut", progress=False, on_epoch=crash)
    assert load_training_state(tmp_path / "cut")["epoch"] == 1
    resumed = run_experiment(None, tmp_path / "cut", resume=True, progress=False)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    for r in log:
        assert {"loss", "accuracy", "lam", "near_threshold", "images_per_s", "lr"} <= r.keys()
    full_log = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in full_log]
    res = json.loads((tmp_path / "full" / "results.json").read_text())
    assert 0.0 <= res["test_accuracy"] <= 1.0 and res["test_samples"] == 60
    # a second run into the same folder is refused; a different config cannot resume it
    with pytest.raises(ConfigError, match="already holds a run"):
        run_experiment(tiny_cfg(), tmp_path / "full", progress=False)
    with pytest.raises(ConfigError, match="seed"):
        run_experiment(tiny_cfg("seed=1"), tmp_path / "full", resume=True, progress=False)


def test_deterministic_and_learns(tmp_path):
    args = ["optim.epochs=6", "optim.lr=0.05", "tgo.enabled=false", "neuron.kind=lif", "data.subset=400",
            "data.test_subset=200", "data.augment=false", "model.kw={}"]
    r1 = run_experiment(tiny_cfg(*args), tmp_path / "a", progress=False)
    r2 = run_experiment(tiny_cfg(*args), tmp_path / "b", progress=False)
    assert r1["test_accuracy"] == r2["test_accuracy"]
    assert r1["final_epoch"]["loss"] == r2["final_epoch"]["loss"]
    assert r1["test_accuracy"] > 0.6  # far above chance (0.1): measured 0.87 with this setup


def test_cli_train(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli_main(["train", "--out", str(out), "--no-progress", "--set", "optim.epochs=1"]
                  + [a for s in TINY[:-3] for a in ("--set", s)])
    assert rc == 0
    assert "clean test accuracy" in capsys.readouterr().out
    assert (out / "results.json").is_file() and (out / "model.safetensors").is_file()
    assert cli_main(["train", "--out", str(tmp_path / "x"), "--set", "tgo.lamda=1"]) == 2
    assert "tgo.lamda" in capsys.readouterr().err
