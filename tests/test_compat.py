"""Run folders written before the training-loop refactor still load and resume.

``tests/data/run-v1-epoch1`` was written by spikeguard 0.1.0 (commit dafb795) with the
config below, stopped after epoch 1 of 2 (``on_epoch`` raised); ``run-v1-final.safetensors``
holds the weights of the same config trained for both epochs without a stop by that version.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from spikeguard.checkpoint import load_run, load_train_state
from spikeguard.jobs.train import run_experiment
from spikeguard.training import TrainState

DATA = Path(__file__).parent / "data"

torch.set_num_threads(1)


def test_old_run_folder_loads():
    run = load_run(DATA / "run-v1-epoch1")
    assert run.config.optim.epochs == 2 and run.meta["model_spec"]["neuron"] == "noisy_lif"
    st = load_train_state(DATA / "run-v1-epoch1")
    assert st.epoch == 1 and st.batch == 0 and st.guard["schedule"]["dual_value"] > 0
    assert TrainState.from_dict(st.to_dict()).to_dict().keys() == st.to_dict().keys()


def test_old_checkpoint_resumes_to_the_old_weights(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(DATA / "run-v1-epoch1", run)
    run_experiment(None, run, resume=True, progress=False)
    got, want = load_file(run / "model.safetensors"), load_file(DATA / "run-v1-final.safetensors")
    assert got.keys() == want.keys()
    for k in want:  # bit-identical on the machine that wrote the files; a tolerance for other CPUs
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
