"""Logs: JSON-lines step/epoch records, memory, TensorBoard hand-off, --quiet/--verbose."""

import importlib.util
import json

import pytest
import torch

from spikeguard import logging as sglog
from spikeguard.cli.main import main as cli_main

torch.set_num_threads(1)

TINY = ["data.name=digits", "model.name=small_conv", "model.T=2", "model.kw={channels = [4, 8, 8]}",
        "optim.epochs=1", "optim.batch_size=32", "data.subset=96", "data.test_subset=20", "tgo.enabled=true",
        "tgo.schedule=constant", "tgo.lambda_max=0.2"]


def sets(*items):
    return [a for s in items for a in ("--set", s)]


def test_quiet_prints_nothing_and_verbose_prints_steps(tmp_path, capsys):
    assert cli_main(["train", "--out", str(tmp_path / "q"), "--quiet", *sets(*TINY)]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""
    assert cli_main(["train", "--out", str(tmp_path / "v"), "--verbose", "--log-every", "1", *sets(*TINY)]) == 0
    err = capsys.readouterr().err
    assert "rank 0/1" in err and err.count("step ") >= 3 and "img/s" in err and "MiB" in err
    rows = [json.loads(line) for line in (tmp_path / "v" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["lam"] == pytest.approx(0.2) and 0 <= r["near_threshold"] <= 1 and r["images_per_s"] > 0
        assert r["rss_mb"] > 0 and r["max_rss_mb"] >= r["rss_mb"] * 0.5
    (epoch,) = [json.loads(line) for line in (tmp_path / "v" / "log.jsonl").read_text().splitlines()]
    assert epoch["step"] == 3 and epoch["constraint"] > 0 and "max_rss_mb" in epoch
    assert cli_main(["train", "--quiet", "--verbose", "--out", str(tmp_path / "x"), *sets(*TINY)]) == 2
    assert "exclude each other" in capsys.readouterr().err


class _FakeWriter:
    def __init__(self):
        self.scalars = []
        self.closed = False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_tensorboard_receives_step_and_epoch_scalars(tmp_path, monkeypatch):
    from spikeguard.config import load_config
    from spikeguard.jobs.train import run_experiment

    fake = _FakeWriter()
    monkeypatch.setattr(sglog, "_summary_writer", lambda path: fake)
    logger = sglog.RunLogger(tmp_path / "run", verbosity=sglog.QUIET, log_every=2, tensorboard=True)
    run_experiment(load_config(None, TINY), tmp_path / "run", progress=False, logger=logger)
    tags = {t for t, _, _ in fake.scalars}
    assert {"step/loss", "step/lam", "step/images_per_s", "epoch/loss", "epoch/near_threshold"} <= tags
    assert [s for t, _, s in fake.scalars if t == "step/loss"] == [2]
    assert fake.closed


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_missing_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["train", "--out", str(tmp_path / "r"), "--tensorboard", "--quiet", *sets(*TINY)]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err


def test_jsonl_append_and_torn_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    sglog.append_jsonl(path, {"step": 1, "loss": float("nan")})
    sglog.append_jsonl(path, {"step": 2, "loss": 0.5})
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # a kill mid-write
    assert sglog.read_jsonl(path) == [{"step": 1, "loss": None}, {"step": 2, "loss": 0.5}]
    assert sglog.read_jsonl(path, keep=lambda r: r["step"] > 1) == [{"step": 2, "loss": 0.5}]
    mem = sglog.memory_stats("cpu")
    assert mem["max_rss_mb"] > 0 and "cuda_max_allocated_mb" not in mem
