"""Multi-process training and evaluation: gloo on 127.0.0.1 with forked workers (no network).

Forked workers inherit the imported modules, so a two-process job costs a second, not two
fresh interpreter start-ups; the launcher's own subprocess path is tested once at the end.
"""

import json
import multiprocessing
import os
import signal
import traceback

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from spikeguard import distributed
from spikeguard.config import load_config
from spikeguard.distributed import ShardWeight, SyncBatchNorm, shard_bounds
from spikeguard.jobs.train import run_experiment

torch.set_num_threads(1)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

# 203 training images in batches of 64: the last batch (11) splits 6/5 over two ranks, so
# the per-rank gradient weights b_r / B are exercised, not only the even case
TINY = ["data.name=digits", "model.name=small_conv", "model.T=2", "model.kw={channels = [4, 8, 8]}",
        "optim.epochs=1", "optim.batch_size=64", "data.subset=203", "data.test_subset=40", "checkpoint_every=1",
        "neuron.kind=lif", "tgo.enabled=true", "tgo.schedule=dual", "tgo.dual_lr=20.0", "sync_bn=true"]


def _worker(rank, world, port, fn, args, queue):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        distributed.init_from_env("cpu", timeout_s=120)
        queue.put((rank, True, fn(*args)))
    except BaseException as e:  # report, never hang the parent
        queue.put((rank, False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        distributed.shutdown()


def run_ranks(fn, *args, world=2, timeout=180):
    """``{rank: fn(*args)}`` from ``world`` forked processes joined in a gloo group."""
    mp = multiprocessing.get_context("fork")
    queue = mp.Queue()
    port = distributed.free_port()
    procs = [mp.Process(target=_worker, args=(r, world, port, fn, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    out = {}
    try:
        for _ in range(world):
            rank, ok, value = queue.get(timeout=timeout)
            assert ok, f"rank {rank} failed: {value}"
            out[rank] = value
    finally:
        for p in procs:
            p.join(timeout=20)
            if p.is_alive():
                p.kill()
    return out


def _train(cfg, out, resume=False):
    return run_experiment(cfg, out, resume=resume, progress=False)


def _weights(path):
    return load_file(os.path.join(path, "model.safetensors"))


def test_two_process_ddp_matches_one_process(tmp_path):
    """Same global batches, SyncBN and the b_r/B-weighted gradient sum: the 2-process run is
    the 1-process run up to float summation order (BN statistics and the TGO constraint are
    means over the global batch in both)."""
    cfg = load_config(None, TINY)
    one = run_experiment(cfg, tmp_path / "one", progress=False)
    res = run_ranks(_train, cfg, str(tmp_path / "two"))
    assert res[1] == {"rank": 1}  # only rank 0 reports (and writes)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k].float(), a[k].float(), rtol=1e-5, atol=5e-6, msg=k)
    la = json.loads((tmp_path / "one" / "log.jsonl").read_text().splitlines()[0])
    lb = json.loads((tmp_path / "two" / "log.jsonl").read_text().splitlines()[0])
    for k in ("loss", "task_loss", "constraint", "accuracy", "near_threshold"):
        assert lb[k] == pytest.approx(la[k], rel=1e-4, abs=1e-6), k
    assert la["lam"] > 0  # the dual lambda moved, on the global constraint in both runs
    assert lb["lam"] == pytest.approx(la["lam"], rel=1e-4)
    assert res[0]["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=1 / 40 + 1e-9)


def _sync_bn_case():
    """SyncBN on uneven shards against BatchNorm on the whole batch (values, grads, running stats)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 4, 4, generator=g) * 2 + 1
    w = torch.randn(7, 3, 4, 4, generator=g)
    ref = nn.BatchNorm2d(3)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=g)
        ref.bias.uniform_(-0.5, 0.5, generator=g)
    xr = x.clone().requires_grad_()
    yr = ref(xr)
    (yr * w).mean().backward()
    rank = torch.distributed.get_rank()
    s, e = shard_bounds(7, rank, 2)
    shard = ShardWeight(2)
    shard.weight = (e - s) / 7
    bn = SyncBatchNorm(3, shard=shard)
    with torch.no_grad():
        bn.weight.copy_(ref.weight)
        bn.bias.copy_(ref.bias)
    xs = x[s:e].clone().requires_grad_()
    ys = bn(xs)
    (ys * w[s:e]).mean().backward()  # this rank's loss: the mean over its shard
    grads = torch.cat([bn.weight.grad, bn.bias.grad]) * shard.weight
    torch.distributed.all_reduce(grads)  # what the DDP hook does
    torch.testing.assert_close(ys, yr[s:e].detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads, torch.cat([ref.weight.grad, ref.bias.grad]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xs.grad * shard.weight, xr.grad[s:e], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    return True


def test_sync_batchnorm_uneven_shards():
    assert run_ranks(_sync_bn_case) == {0: True, 1: True}


def test_sync_batchnorm_is_plain_batchnorm_alone():
    bn, ref = SyncBatchNorm(4), nn.BatchNorm1d(4)
    x = torch.randn(6, 4)
    torch.testing.assert_close(bn(x), ref(x))
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    keys = list(model.state_dict())
    distributed.convert_sync_batchnorm(model)
    assert isinstance(model[1], SyncBatchNorm) and list(model.state_dict()) == keys
    assert model[1].weight is opt.param_groups[0]["params"][2]  # the optimizer still holds the same tensors


def test_shards_cover_the_batch_disjointly():
    for n in (1, 7, 64, 65):
        for world in (1, 2, 3):
            parts = [shard_bounds(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(e - s for s, e in parts) - min(e - s for s, e in parts) <= 1


def _eval_case(n_world):
    from spikeguard.evaluation.sharded import evaluate_sharded
    from spikeguard.models import create_model

    torch.manual_seed(0)
    model = create_model("small_conv", 10, T=2, in_channels=1, image_size=8, channels=[4, 8, 8],
                         neuron="noisy_lif").eval()
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model mostly gets right: every attack has work to do
    rep = evaluate_sharded(model, x, y, ["fgsm", "pgd3", "fixed-noise"], eps=0.1, eot=2, passes=3, batch_size=4,
                           seed=5)
    d = rep.to_dict(per_sample=True)
    d.pop("seconds")
    for a in d["attacks"].values():
        a.pop("seconds")
    return d


def test_distributed_evaluation_equals_one_process():
    from spikeguard.evaluation import evaluate_robustness
    from spikeguard.models import create_model

    single = _eval_case(1)
    res = run_ranks(_eval_case, 2)
    assert res[0] == single and res[1] == single  # every rank gets the gathered report
    # and both equal one plain call of the engine over all batches
    torch.manual_seed(0)
    model = create_model("small_conv", 10, T=2, in_channels=1, image_size=8, channels=[4, 8, 8],
                         neuron="noisy_lif").eval()
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    full = evaluate_robustness(model, x, y, ["fgsm", "pgd3", "fixed-noise"], eps=0.1, eot=2, passes=3, batch_size=4,
                               seed=5).to_dict(per_sample=True)
    assert full["per_sample"] == single["per_sample"] and full["worst_case"] == single["worst_case"]
    assert 0 < single["clean"]["accuracy"] and single["attacks"]["pgd3"]["n_attacked"] > 0


def _train_stop_at(cfg, out, stop_rank, at_step):
    """Rank ``stop_rank`` gets SIGTERM while training step ``at_step``; every rank must stop at that batch."""
    from spikeguard.signals import Interrupted
    from spikeguard.training import Trainer

    orig = Trainer.train_step
    calls = [0]

    def step(self, *a, **k):
        calls[0] += 1
        if calls[0] == at_step and torch.distributed.get_rank() == stop_rank:
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(self, *a, **k)

    Trainer.train_step = step
    try:
        run_experiment(cfg, out, progress=False)
    except Interrupted as e:
        return ("interrupted", e.exit_code, calls[0])
    return ("finished", 0, calls[0])


def test_sigterm_on_one_rank_stops_all_and_resumes_exactly(tmp_path):
    cfg = load_config(None, TINY + ["optim.epochs=2", "checkpoint_every=0"])
    full = run_ranks(_train, cfg, str(tmp_path / "full"))
    assert full[1] == {"rank": 1}
    res = run_ranks(_train_stop_at, cfg, str(tmp_path / "cut"), 1, 6)
    # both ranks finished step 6 (the batch in flight) and stopped before step 7
    assert res[0] == res[1] == ("interrupted", 143, 6)
    st = json.loads((tmp_path / "cut" / "state.json").read_text())["state"]
    assert st["epoch"] == 1 and st["batch"] == 2 and len(st["rng_ranks"]) == 1
    run_ranks(_train, None, str(tmp_path / "cut"), True)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same world size on CPU: bit for bit


def test_cli_train_distributed_launcher(tmp_path):
    """``spikeguard train --distributed 2`` through real subprocesses (the torchrun-free launcher)."""
    from spikeguard.cli.main import main

    args = [a for s in TINY + ["data.subset=130", "data.test_subset=20"] for a in ("--set", s)]
    rc = main(["train", "--out", str(tmp_path / "run"), "--quiet", "--distributed", "2", *args])
    assert rc == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1] and log[0]["images_per_s"] > 0
    assert (tmp_path / "run" / "results.json").is_file()
