"""The entry point: method dispatch, input checks, out-of-memory handling."""
from __future__ import annotations

import pytest
import torch

import gani.tuning.api as api
from gani.tuning import TuningOOM, tune_images

from tuning_helpers import cfg_for, pixel_loss


def test_oom_raises_a_catchable_type_or_halves(G, targets, w0, monkeypatch):
    real = api._run_batch
    sizes = []

    def fake(method, G, t, w, cfg, loss, **kw):
        sizes.append(t.shape[0])
        if t.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(method, G, t, w, cfg, loss, **kw)

    monkeypatch.setattr(api, "_run_batch", fake)
    cfg = cfg_for(steps=1)
    with pytest.raises(TuningOOM) as ei:
        tune_images("pti", G, targets, w0, cfg, pixel_loss(cfg))
    assert ei.value.batch_size == 2 and "smaller" in str(ei.value)
    sizes.clear()
    res = tune_images("pti", G, targets, w0, cfg, pixel_loss(cfg), on_oom="halve")
    assert sizes == [2, 1, 1] and len(res) == 2
    assert res[0].loss_curve[0] != res[1].loss_curve[0]


def test_bad_inputs_are_named(G, targets, w0):
    cfg = cfg_for(steps=1)
    with pytest.raises(ValueError, match="unknown tune method"):
        tune_images("sgd", G, targets, w0, cfg, pixel_loss(cfg))
    with pytest.raises(ValueError, match="2 targets but 1 latents"):
        tune_images("pti", G, targets, w0[:1], cfg, pixel_loss(cfg))
    with pytest.raises(ValueError, match="px"):
        tune_images("pti", G, targets[..., :16, :16], w0, cfg, pixel_loss(cfg))


def test_progress_callback_and_w_latent_input(G, targets, w0):
    seen = []
    cfg = cfg_for(steps=4)
    cfg.log_every = 2
    tune_images("gani", G, targets, w0[:, 0], cfg, pixel_loss(cfg), progress=seen.append)
    assert [e["step"] for e in seen] == [0, 2, 4]
    assert all(len(e["losses"]) == 2 and e["method"] == "gani" for e in seen)


@pytest.mark.parametrize("method", api.METHODS)
def test_every_method_runs_tune_steps(G, targets, w0, method):
    """tune.steps is the step count of whichever method runs; e4e runs none (one value)."""
    cfg = cfg_for(steps=3)
    res = tune_images(method, G, targets, w0, cfg, pixel_loss(cfg))
    assert api.steps_of(method, cfg) == (0 if method == "e4e" else 3)
    assert [len(r.loss_curve) for r in res] == [api.steps_of(method, cfg) + 1] * 2
