"""``Trainer.fit`` from a ``TrainState``, the dataset info records and ``EpochStats.merge``."""

from __future__ import annotations

import pytest
import torch

from spikeguard.config import load_config
from spikeguard.data import dataset_info, load_digits_split
from spikeguard.distributed import EpochLoader
from spikeguard.errors import DataError
from spikeguard.jobs.train import build_model
from spikeguard.training import EpochStats, Trainer, TrainState, make_sgd
from spikeguard.training.state import capture_rng, restore_rng

torch.set_num_threads(1)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    cfg = load_config(None, ["data.name=digits", "model.name=small_conv", "model.T=2",
                             "model.kw={channels = [4, 8, 8]}"])
    model = build_model(cfg)
    opt, sched = make_sgd(model, lr=0.05, epochs=2, steps_per_epoch=3)
    return Trainer(model, opt, sched), model


def test_fit_resumed_from_a_saved_state_matches_one_fit(tmp_path):
    train, _ = load_digits_split()
    ds = train.subset(90, seed=0)

    def run(stop_after: int | None):
        trainer, model = _setup()
        gen = torch.Generator().manual_seed(1)
        calls = []

        def loader(start, order_state):
            ld = EpochLoader(ds, 32, gen, start=start, order_state=order_state,
                             stop=(lambda: len(calls) >= stop_after) if stop_after is not None else None)
            return ld

        state = trainer.fit(loader, TrainState(), 2, 3, on_batch=lambda e, ld, m: calls.append(m))
        return trainer, model, gen, state, loader

    _, ref, _, done, _ = run(None)
    assert done.epoch == 2 and not done.stopped
    trainer, model, gen, state, _ = run(4)  # stops after batch 1 of epoch 2
    assert state.stopped and (state.epoch, state.batch) == (1, 1) and state.partial["seen"] == 32
    state.rng = capture_rng(gen)
    for key, value in trainer.state_dict().items():
        setattr(state, key, value)
    saved = TrainState.from_dict(state.to_dict())
    # a fresh process: same initial weights, then the saved state
    trainer2, model2 = _setup()
    model2.load_state_dict(model.state_dict())
    gen2 = torch.Generator()
    restore_rng(saved.rng, gen2)
    trainer2.load_state_dict(saved)
    end = trainer2.fit(lambda s, o: EpochLoader(ds, 32, gen2, start=s, order_state=o), saved, 2, 3)
    assert end.epoch == 2 and not end.stopped
    for (k, a), b in zip(ref.state_dict().items(), model2.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)


def test_epoch_stats_merge_is_sample_weighted():
    nan = float("nan")
    first = EpochStats(1, 2.0, 2.0, 0.0, 0.0, 0.5, nan, 1.0, 10.0)
    rest = EpochStats(1, 1.0, 1.0, 0.0, 0.0, 1.0, 0.2, 3.0, 10.0)
    m = rest.merge({"stats": first.as_dict(), "seen": 10}, 30)
    assert m.loss == pytest.approx((2 * 10 + 1 * 30) / 40) and m.accuracy == pytest.approx(35 / 40)
    assert m.near_threshold == pytest.approx(0.2)  # NaN in the first part: the rest's value stays
    assert m.seconds == 4.0 and m.images_per_s == pytest.approx(10.0)
    assert set(EpochStats.REDUCIBLE) <= set(m.as_dict())


def test_dataset_info_records():
    c10, c100, coarse = dataset_info("cifar-10"), dataset_info("cifar100"), dataset_info("cifar100-coarse")
    assert c10.num_classes == 10 and c10.classes[0] == "airplane" and c10.image_shape == (3, 32, 32)
    assert c100.num_classes == 100 and c100.classes[:2] == ("apple", "aquarium_fish") and c100.classes[-1] == "worm"
    assert coarse.num_classes == 20 and coarse.mean == c100.mean
    assert dataset_info("digits").model_kw() == {"in_channels": 1, "image_size": 8, "mean": [0.3], "std": [0.4]}
    assert dataset_info("folder") is None
    with pytest.raises(DataError):
        dataset_info("imagenet")
    cfg = load_config(None, ["data.name=cifar100", "model.name=small_conv", "model.T=1"])
    model = build_model(cfg)  # no data needed: the record says 100 classes, 3x32x32
    assert model.spikeguard_spec["num_classes"] == 100
    assert model.spikeguard_spec["kw"]["mean"] == list(c100.mean)
