"""Hostile inputs: each gives a one-line error naming the problem, a non-zero exit, and
leaves existing outputs exactly as they were."""

import errno
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from spikeguard.checkpoint import load_run, load_training_state, save_checkpoint
from spikeguard.cli.main import main as cli_main
from spikeguard.config import load_config
from spikeguard.data import ImageDataset
from spikeguard.errors import SpikeguardError
from spikeguard.jobs.train import build_model, run_experiment

torch.set_num_threads(1)

TINY = ["data.name=digits", "model.name=small_conv", "model.T=2", "model.kw={channels = [4, 8, 8]}",
        "optim.epochs=1", "optim.batch_size=64", "data.subset=64", "data.test_subset=20", "checkpoint_every=1"]


def sets(*items):
    return [a for s in items for a in ("--set", s)]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes (temporary files included, so leftovers show)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1 and errors[0].startswith("spikeguard "), err
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch run with a training state and an evaluation output."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    run_experiment(load_config(None, TINY), run, progress=False)
    (run / "evaluation").mkdir()
    (run / "evaluation" / "robustness.json").write_text('{"old": "result"}\n')
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def evaluate_args(run, *extra):
    return ["evaluate", "--checkpoint", str(run), "--attacks", "fgsm", "--n-samples", "10", "--quiet", *extra]


# ----------------------------------------------------------------------------- configs

def test_config_from_a_newer_version(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("format_version = 99\n[model]\nname = 'small_conv'\n")
    rc = cli_main(["train", "--config", str(cfg), "--out", str(tmp_path / "out")])
    one_line_error(capsys, rc, "format_version 99")
    assert not (tmp_path / "out").exists()


def test_malformed_toml(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[model\nname = \n")
    rc = cli_main(["train", "--config", str(cfg), "--out", str(tmp_path / "out")])
    one_line_error(capsys, rc, "bad.toml", "not valid TOML")
    cfg.write_bytes(b"\xff\xfe\x00garbage")
    one_line_error(capsys, cli_main(["train", "--config", str(cfg), "--out", str(tmp_path / "out")]), "bad.toml")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override, words", [
    ("model.T=0", ["model.T", ">= 1"]),
    ("eval.eps=1.5", ["eval.eps", "[0, 1]"]),
    ("eval.eps=-0.1", ["eval.eps"]),
    ("model.nam=vgg11", ["model.nam", "model.name"]),
])
def test_bad_config_values(tmp_path, capsys, override, words):
    rc = cli_main(["train", "--out", str(tmp_path / "out"), *sets(*TINY, override)])
    one_line_error(capsys, rc, *words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("eps, words", [("-1", ["eps", "[0, 1]"]), ("300", ["eps", "[0, 1]"]), ("abc", ["--eps"])])
def test_eps_outside_the_pixel_range(run_copy, capsys, eps, words):
    before = snapshot(run_copy)
    one_line_error(capsys, cli_main(evaluate_args(run_copy, "--eps", eps)), *words)
    assert snapshot(run_copy) == before


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoint_from_a_newer_version(run_copy, capsys):
    meta = json.loads((run_copy / "config.json").read_text())
    meta["format_version"] = 99
    (run_copy / "config.json").write_text(json.dumps(meta))
    before = snapshot(run_copy)
    one_line_error(capsys, cli_main(evaluate_args(run_copy)), "format_version 99", "upgrade")
    one_line_error(capsys, cli_main(["train", "--out", str(run_copy), "--resume", "--quiet"]), "format_version 99")
    assert snapshot(run_copy) == before


def test_weights_from_a_newer_version(run_copy, capsys):
    w = load_file(run_copy / "model.safetensors")
    save_file(w, run_copy / "model.safetensors", metadata={"format_version": "7", "model": "small_conv"})
    before = snapshot(run_copy)
    one_line_error(capsys, cli_main(evaluate_args(run_copy)), "model.safetensors", "format_version 7")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("damage", ["truncate", "header", "flip"])
def test_truncated_or_corrupted_safetensors(run_copy, capsys, damage):
    f = run_copy / "model.safetensors"
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "header":
        data[8:40] = b"#" * 32  # the JSON header is garbage
    else:
        data[:8] = (10**12).to_bytes(8, "little")  # header length past the end of the file
    f.write_bytes(bytes(data))
    before = snapshot(run_copy)
    one_line_error(capsys, cli_main(evaluate_args(run_copy)), "model.safetensors", "corrupt or truncated")
    one_line_error(capsys, cli_main(["train", "--out", str(run_copy), "--resume", "--quiet"]), "corrupt or truncated")
    assert snapshot(run_copy) == before


def test_corrupted_training_state(run_copy, capsys):
    f = run_copy / "state.safetensors"
    f.write_bytes(f.read_bytes()[:-50])
    before = snapshot(run_copy)
    one_line_error(capsys, cli_main(["train", "--out", str(run_copy), "--resume", "--quiet"]),
                   "state.safetensors", "corrupt or truncated")
    assert snapshot(run_copy) == before


class _Payload:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_checkpoint_is_never_executed(run_copy, tmp_path, capsys):
    marker = tmp_path / "pwned"
    (run_copy / "model.safetensors").write_bytes(pickle.dumps(_Payload(str(marker))))
    torch.save({"w": torch.zeros(1)}, run_copy / "state.safetensors")  # a torch (zip-pickle) file
    one_line_error(capsys, cli_main(evaluate_args(run_copy)), "corrupt or truncated")
    one_line_error(capsys, cli_main(["train", "--out", str(run_copy), "--resume", "--quiet"]), "corrupt or truncated")
    assert not marker.exists()


# ----------------------------------------------------------------------------- data

def _image_folder(root: Path, classes=("a", "b"), per_class=4, size=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("bad", ["not-an-image", "truncated"])
def test_image_folder_with_a_bad_file(tmp_path, capsys, bad):
    root = _image_folder(tmp_path / "data")
    target = root / "train" / "b" / "9.png"
    if bad == "not-an-image":
        target.write_text("this is a text file with a .png name\n")
    else:
        target.write_bytes((root / "train" / "b" / "0.png").read_bytes()[:30])
    args = sets("data.name=folder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", "model.name=small_conv",
                "model.T=1", "optim.epochs=1", "optim.batch_size=4")
    out = tmp_path / "out"
    rc = cli_main(["train", "--out", str(out), "--quiet", *args])
    one_line_error(capsys, rc, "9.png")
    assert not (out / "model.safetensors").exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npz"))


def test_wrong_number_of_classes(tmp_path, capsys):
    # a 3-class model for 8x8 RGB images against a folder with 5 classes
    cfg = load_config(None, ["data.name=folder", "model.name=small_conv", "model.T=1"])
    ds3 = ImageDataset(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.arange(3), ["a", "b", "c"], [0.5] * 3, [0.25] * 3)
    run = tmp_path / "run3"
    save_checkpoint(run, build_model(cfg, ds3).eval(), cfg)
    root = _image_folder(tmp_path / "data5", classes=("a", "b", "c", "d", "e"), per_class=2)
    (run / "evaluation").mkdir()
    (run / "evaluation" / "robustness.json").write_text("{}\n")
    before = snapshot(run)
    rc = cli_main(["evaluate", "--checkpoint", str(run), "--data-root", str(root), "--attacks", "fgsm", "--quiet"])
    one_line_error(capsys, rc, "labels up to 4", "3 classes")
    assert snapshot(run) == before
    # and at training time: fewer model outputs than the data's classes
    rc = cli_main(["train", "--out", str(tmp_path / "out"), *sets(*TINY, "model.num_classes=3")])
    one_line_error(capsys, rc, "num_classes = 3", "10 classes")


def test_nan_or_inf_in_data():
    x = torch.rand(4, 1, 8, 8)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(SpikeguardError, match="NaN or Inf"):
        ImageDataset(x, torch.zeros(4, dtype=torch.long), ["a"])
    from spikeguard.evaluation.sharded import evaluate_sharded
    from spikeguard.models import create_model

    model = create_model("small_conv", 10, T=1, in_channels=1, image_size=8).eval()
    x[1, 0, 2, 2] = float("inf")
    with pytest.raises(SpikeguardError, match="1 of 4 images contain NaN or Inf"):
        evaluate_sharded(model, x, torch.zeros(4, dtype=torch.long), ["fgsm"], batch_size=2)


# ----------------------------------------------------------------------------- output

def test_unwritable_output_folder(tmp_path, run_copy, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    rc = cli_main(["train", "--out", str(blocker / "run"), *sets(*TINY)])
    one_line_error(capsys, rc, "cannot create output folder", "a-file")
    assert blocker.read_text() == "not a folder\n"
    before = snapshot(run_copy)
    rc = cli_main(evaluate_args(run_copy, "--out", str(blocker / "eval")))
    one_line_error(capsys, rc, "cannot create output folder")
    assert snapshot(run_copy) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, run_copy, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        one_line_error(capsys, cli_main(evaluate_args(run_copy, "--out", str(ro))), "not writable")
    finally:
        ro.chmod(0o700)


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_old_result(run_copy, capsys, monkeypatch):
    before = snapshot(run_copy)
    monkeypatch.setattr(os, "fsync", _enospc)  # where a full disk shows up with delayed allocation
    rc = cli_main(evaluate_args(run_copy))
    one_line_error(capsys, rc, "robustness.json", "No space left on device")
    after = snapshot(run_copy)
    assert after["evaluation/robustness.json"] == before["evaluation/robustness.json"]
    # the per-batch journal is kept for the retry; no temporary file is left behind
    assert not [k for k in after if k.endswith(".tmp")]
    assert {k: v for k, v in after.items() if ".evaluate-" not in k} == before


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(trained, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = snapshot(run)
    good = load_training_state(run)
    calls = [0]
    real = os.fsync

    def fail_second(fd):
        calls[0] += 1
        if calls[0] == 2:  # the state is on disk, the weights are not
            _enospc()
        return real(fd)

    monkeypatch.setattr(os, "fsync", fail_second)
    r = load_run(run)
    with pytest.raises(SpikeguardError, match="No space left on device"):
        save_checkpoint(run, r.model, r.config, {"epoch": 99})
    assert snapshot(run) == before  # nothing renamed, no temporary files
    assert load_training_state(run)["epoch"] == good["epoch"]


def test_full_disk_while_journaling_an_evaluation(run_copy, capsys, monkeypatch):
    before = snapshot(run_copy)
    monkeypatch.setattr(os, "write", _enospc)
    one_line_error(capsys, cli_main(evaluate_args(run_copy)), "No space left on device")
    monkeypatch.undo()
    after = snapshot(run_copy)
    assert {k: v for k, v in after.items() if ".evaluate-" not in k} == before
