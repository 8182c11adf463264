import pytest
import torch

from spikeguard.tgo import LambdaSchedule, ThresholdGuard, membrane_constraint, near_threshold_share


def test_constraint_exact_values_inside_and_outside_margin():
    # V_th = 1, delta = 0.5: |U - 1| = 0 -> 0.25, 0.25 -> 0.0625, >= 0.5 -> 0
    u1 = torch.tensor([[1.0, 1.25, 0.75, 1.5, 0.0, 3.0]])
    expected1 = (0.25 + 0.0625 + 0.0625) / 6
    u2 = torch.tensor([[[1.1]], [[-5.0]]])  # second layer, [T=2, B=1, 1]
    expected2 = (0.4 ** 2 + 0.0) / 2
    got = membrane_constraint([u1, u2], v_threshold=1.0, delta=0.5)
    torch.testing.assert_close(got, torch.tensor((expected1 + expected2) / 2))


def test_constraint_zero_far_from_threshold():
    u = torch.tensor([-3.0, 0.0, 0.49, 1.51, 4.0])
    assert float(membrane_constraint([u], 1.0, 0.5)) == 0.0


def test_constraint_gradcheck():
    u = (torch.rand(3, 2, 4, dtype=torch.float64) * 2).requires_grad_(True)
    # keep points away from the kinks at |U - V_th| in {0, delta}
    with torch.no_grad():
        d = (u - 1).abs()
        u[(d < 0.02) | ((d - 0.5).abs() < 0.02)] += 0.07
    assert torch.autograd.gradcheck(lambda x: membrane_constraint([x, x * 0.5], 1.0, 0.5), (u,))


def test_near_threshold_share_is_direct_count():
    u = torch.tensor([0.4, 0.6, 1.0, 1.4, 1.6, -1.0])
    assert near_threshold_share([u], 1.0, 0.5) == pytest.approx(3 / 6)


@pytest.mark.parametrize("kind", ["linear", "cosine", "exp"])
def test_schedules_ramp_monotonically_to_lambda_max(kind):
    s = LambdaSchedule(kind, lambda_max=0.4, ramp_epochs=10)
    vals = [s(e / 4) for e in range(0, 50)]
    assert vals[0] == pytest.approx(s.lambda_start)
    assert vals[0] < 0.4 * 0.05
    assert vals[-1] == pytest.approx(0.4)
    assert all(b >= a - 1e-12 for a, b in zip(vals, vals[1:]))
    assert s(100) == pytest.approx(0.4)


def test_dual_ascent_moves_towards_target_and_is_clipped():
    s = LambdaSchedule("dual", lambda_max=0.3, dual_lr=0.5, dual_target=0.01)
    assert s(0) == 0.0
    s.update(0.11)
    assert s(0) == pytest.approx(0.05)
    for _ in range(100):
        s.update(1.0)
    assert s(0) == pytest.approx(0.3)
    for _ in range(100):
        s.update(0.0)
    assert s(0) == 0.0


def test_bad_schedule_arguments():
    with pytest.raises(ValueError):
        LambdaSchedule("sawtooth")
    with pytest.raises(ValueError):
        LambdaSchedule("linear", lambda_max=-1)


def test_guard_weights_constraint_and_logs():
    g = ThresholdGuard(delta=0.5, schedule=LambdaSchedule("linear", 0.4, ramp_epochs=2))
    u = torch.tensor([1.0, 1.25], requires_grad=True)
    term = g([u], epoch=1.0)
    assert g.last_lambda == pytest.approx(0.2)
    torch.testing.assert_close(term, torch.tensor(0.2 * (0.25 + 0.0625) / 2))
    term.backward()
    assert u.grad.abs().sum() > 0
