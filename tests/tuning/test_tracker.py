"""Tracker: per-image curves and parts, non-finite stops and the last good state."""
import math

import torch

from gani.tuning.common import Tracker


def _tracker(batch=3):
    state = [torch.zeros(batch, 4), torch.zeros(batch, 2, 2)]
    return Tracker(state, batch, steps=5, method="pti"), state


def test_curves_and_parts_are_the_exact_values_of_every_dtype():
    track, _ = _tracker()
    losses = torch.tensor([0.1, 0.2, 0.3])
    parts = {"rec": torch.tensor([1 / 3, 2 / 3, 0.7], dtype=torch.float32),
             "lpips": torch.tensor([0.123, 0.456, 0.789], dtype=torch.bfloat16),
             "reg": torch.tensor([1e-9, 2e-9, 3e-9], dtype=torch.float64)}
    track.record(0, losses, parts)
    for i in range(3):
        assert track.curves[i] == [float(losses[i])]
        for k, p in parts.items():
            assert track.parts[i][k] == [float(p[i])]  # bit for bit, as float(p[i]) gives
    assert all(isinstance(v, float) for v in track.parts[0]["rec"])


def test_good_state_follows_finite_images_and_stopped_ones_are_restored():
    track, state = _tracker()
    for s in state:
        s.fill_(1.0)
    track.record(0, torch.zeros(3), {})
    assert all(torch.equal(g, s) for g, s in zip(track.good, state))  # all kept: a copy

    for s in state:  # a step moves every image; image 1's loss is then not finite
        s.fill_(2.0)
    track.record(1, torch.tensor([0.5, math.nan, 0.5]), {"rec": torch.ones(3)})
    assert track.active.tolist() == [True, False, True]
    assert "non-finite loss" in track.errors[1] and "step-0 state" in track.errors[1]
    for g in track.good:
        assert g[0].eq(2).all() and g[1].eq(1).all() and g[2].eq(2).all()
    for s in state:  # the optimizer moves image 1 anyway; freeze puts its good state back
        s.fill_(3.0)
    track.freeze()
    for s in state:
        assert s[1].eq(1).all() and s[0].eq(3).all()
    # the stopped image contributes an exact 0 to the loss that is back-propagated
    losses = torch.tensor([1.0, math.nan, 2.0], requires_grad=True)
    total = track.loss_to_backprop(losses)
    assert float(total.detach()) == 3.0
    total.backward()
    assert losses.grad.tolist() == [1.0, 0.0, 1.0]
    # its curve stops at the failing step; the others go on
    track.record(2, torch.tensor([0.25, 0.1, 0.25]), {"rec": torch.ones(3)})
    assert [len(c) for c in track.curves] == [3, 2, 3]


def test_no_finite_image_leaves_the_good_state_alone():
    track, state = _tracker(2)
    track.record(0, torch.zeros(2), {})
    for s in state:
        s.fill_(5.0)
    track.record(1, torch.tensor([math.inf, math.nan]), {})
    assert not track.any_active
    assert all(g.eq(0).all() for g in track.good)
    assert all("non-finite" in e for e in track.errors)
