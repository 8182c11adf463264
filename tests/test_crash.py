"""Crash safety: SIGKILL and SIGTERM mid-epoch, exact resume, interrupted evaluations."""

import json
import multiprocessing
import os
import signal
import sys

import pytest
import torch
from safetensors.torch import load_file

from spikeguard.checkpoint import load_training_state, save_checkpoint
from spikeguard.cli.main import main as cli_main
from spikeguard.config import load_config
from spikeguard.jobs.train import build_model, run_experiment
from spikeguard.signals import graceful_stop

torch.set_num_threads(1)

# Noisy-LIF noise, a dual-ascent lambda and augmentation: every random stream must resume exactly
TINY = ["data.name=digits", "model.name=small_conv", "model.T=2", "model.kw={channels = [4, 8, 8]}",
        "optim.epochs=3", "optim.batch_size=64", "data.subset=160", "data.test_subset=40",
        "checkpoint_every=1", "tgo.enabled=true", "tgo.schedule=dual", "neuron.kind=noisy_lif"]
STEPS_PER_EPOCH = 3  # 160 images in batches of 64


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted run (the reference every interrupted one must reproduce)."""
    out = tmp_path_factory.mktemp("crash") / "full"
    res = run_experiment(load_config(None, TINY), out, progress=False)
    return out, res


def _weights_equal(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _child(target, args, ready, go, at_step):
    """Run ``target(*args)`` and, when training step ``at_step`` begins, report and wait for ``go``."""
    from spikeguard.training import Trainer

    torch.set_num_threads(1)
    orig = Trainer.train_step
    calls = [0]

    def step(self, *a, **k):
        calls[0] += 1
        if calls[0] == at_step:
            ready.put(os.getpid())
            go.wait(60)
        return orig(self, *a, **k)

    Trainer.train_step = step
    rc = target(*args)
    sys.exit(int(rc or 0))


def _spawn(target, args, at_step):
    mp = multiprocessing.get_context("fork")
    ready, go = mp.Queue(), mp.Event()
    p = mp.Process(target=_child, args=(target, args, ready, go, at_step))
    p.start()
    pid = ready.get(timeout=120)
    assert pid == p.pid
    return p, go


def _train_lib(out):
    run_experiment(load_config(None, TINY), out, progress=False)


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path, full_run):
    full, full_res = full_run
    out = tmp_path / "cut"
    # killed while the second batch of epoch 2 is in flight: the epoch-1 checkpoint is the last one
    p, go = _spawn(_train_lib, (out,), at_step=STEPS_PER_EPOCH + 2)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    assert load_training_state(out)["epoch"] == 1
    assert not (out / "results.json").exists()
    res = run_experiment(None, out, resume=True, progress=False)
    assert _weights_equal(full, out)
    assert res["test_accuracy"] == full_res["test_accuracy"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert [r["loss"] for r in log] == [r["loss"] for r in ref]


def _train_cli(out):
    args = [a for s in TINY + ["checkpoint_every=0"] for a in ("--set", s)]
    return cli_main(["train", "--out", str(out), "--quiet", "--log-every", "1", *args])


def test_sigterm_mid_epoch_checkpoints_at_the_batch_and_resumes_exactly(tmp_path, full_run, capsys):
    full, _ = full_run
    out = tmp_path / "term"
    at = STEPS_PER_EPOCH + 2
    p, go = _spawn(_train_cli, (out,), at_step=at)
    os.kill(p.pid, signal.SIGTERM)
    go.set()  # the batch in flight completes, then the run checkpoints and stops
    p.join(60)
    assert p.exitcode == 128 + signal.SIGTERM
    st = load_training_state(out)
    # checkpoint_every=0 would write nothing before the end: this is the signal's checkpoint
    assert (st["epoch"], st["batch"]) == (1, 2)
    assert not (out / "results.json").exists()
    steps = [json.loads(line)["step"] for line in (out / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(1, at + 1))
    assert cli_main(["train", "--out", str(out), "--resume", "--quiet", "--log-every", "1"]) == 0
    assert _weights_equal(full, out)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    # the interrupted epoch's averages combine both parts (equal up to summation order)
    for r, q in zip(log, ref):
        assert r["loss"] == pytest.approx(q["loss"], rel=1e-6) and r["lam"] == pytest.approx(q["lam"], rel=1e-6)
    steps = [json.loads(line)["step"] for line in (out / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    for row in (json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()):
        assert {"loss", "lam", "accuracy", "near_threshold", "images_per_s", "rss_mb", "max_rss_mb"} <= row.keys()


def test_graceful_stop_first_signal_flags_second_interrupts():
    before = signal.getsignal(signal.SIGINT)
    with graceful_stop() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM and stop.name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # a second signal: the user insists
    assert signal.getsignal(signal.SIGINT) is before


def _make_run(path, noisy=True):
    cfg = load_config(None, ["data.name=digits", "model.name=small_conv", "model.T=2",
                             "model.kw={channels = [4, 8, 8]}", "neuron.kind=" + ("noisy_lif" if noisy else "lif")])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.eval()
    save_checkpoint(path, model, cfg)
    return path


def test_interrupted_evaluation_resumes_from_its_journal(tmp_path, monkeypatch, capsys):
    from spikeguard.evaluation import sharded

    run = _make_run(tmp_path / "run")
    args = ["evaluate", "--checkpoint", str(run), "--attacks", "fgsm,pgd2", "--eps", "0.1", "--eot", "2",
            "--passes", "2", "--n-samples", "30", "--batch-size", "8", "--quiet"]
    ref_out = tmp_path / "ref"
    assert cli_main(args + ["--out", str(ref_out)]) == 0
    ref = json.loads((ref_out / "robustness.json").read_text())["report"]

    orig = sharded.evaluate_robustness
    calls = []

    def crash_on_third(*a, **k):
        calls.append(k["first_batch"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C / a kill while batch 2 runs
        return orig(*a, **k)

    out = tmp_path / "out"
    monkeypatch.setattr(sharded, "evaluate_robustness", crash_on_third)
    assert cli_main(args + ["--out", str(out)]) == 130
    assert not (out / "robustness.json").exists()
    (journal,) = out.glob(".evaluate-*")
    assert sorted(sharded.read_journal(journal)) == [0, 1]
    with open(next(journal.glob("*.jsonl")), "a") as f:
        f.write('{"format": 1, "batch": 2, "n": 8, "cle')  # a line torn by a kill mid-write
    calls.clear()
    monkeypatch.setattr(sharded, "evaluate_robustness", lambda *a, **k: (calls.append(k["first_batch"]), orig(*a, **k))[1])
    assert cli_main(args + ["--out", str(out)]) == 0
    assert calls == [2, 3]  # only the batches not on record
    assert not journal.exists()  # removed once robustness.json is written
    got = json.loads((out / "robustness.json").read_text())["report"]
    for doc in (ref, got):
        doc.pop("seconds")
        for a in doc["attacks"].values():
            a.pop("seconds")
    assert got == ref
