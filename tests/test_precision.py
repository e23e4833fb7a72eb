"""The same metrics whatever the training precision: features and logits in float32, a pooling layer
with a deterministic backward (issue 23, item 6)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearn_da.core.checkpoints import save_checkpoint
from unlearn_da.data.prepared import load_prepared
from unlearn_da.jobs.features import run_features
from unlearn_da.core.models import GlobalMeanPool, ResNet18, SmallCNN, build_model, model_spec
from unlearn_da.core.runtime import seed_everything
from unlearn_da.core.training import Preprocessor


@pytest.mark.parametrize("spec", [model_spec("smallcnn", 10, 1, 8, 16), model_spec("smallcnn", 10, 1, 28, 8),
                                  model_spec("resnet18", 10, 3, 32, 0)])
def test_mean_pooling_keeps_the_state_dict_and_the_outputs_of_adaptive_average_pooling(spec):
    seed_everything(0)
    model = build_model(spec).eval()
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())  # no non-deterministic backward
    old = copy.deepcopy(model)
    adaptive = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if isinstance(old, SmallCNN):
        old.body[-1] = adaptive
    else:
        assert isinstance(old, ResNet18)
        old.pool = adaptive
    assert list(old.state_dict()) == list(model.state_dict())  # the same keys: old checkpoints still load
    old.load_state_dict(model.state_dict())
    x = torch.randn(4, spec["in_channels"], spec["image_size"], spec["image_size"], generator=torch.Generator().manual_seed(1))
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        with torch.no_grad():
            assert torch.allclose(old(xl), model(xl), rtol=0, atol=1e-6)


def test_global_mean_pool_has_a_gradient_on_every_pixel():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    GlobalMeanPool()(x).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 1 / 16))


def test_features_and_logits_are_float32_even_under_bf16_autocast(digits_file, tmp_path):
    """Under bf16 autocast (what CUDA training runs with), the extraction job still stores float32
    arrays equal to a float32 forward: MIA, DA, probes and clustering never see bf16 numbers."""
    seed_everything(0)
    spec = model_spec("smallcnn", 10, 1, 8, 16)
    model = build_model(spec)
    ckpt = tmp_path / "models" / "ft.pt"
    ckpt.parent.mkdir()
    save_checkpoint(model, ckpt, "unlearn", {"spec": spec, "seed": 0})
    params = {"batch_size": 4096, "device": "cpu", "deterministic": True, "cpu_kernels": "portable",
              "precision": {"amp": "on", "channels_last": "off"}}
    out = tmp_path / "features" / "ft.npz"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        run_features(str(digits_file), str(ckpt), 1, params, str(out))
    stored = np.load(out)
    data = load_prepared(digits_file)
    prep = Preprocessor(data.mean, data.std, data.info.scale, torch.device("cpu"))
    model.eval()
    for split in ("train", "val", "test"):
        with torch.no_grad():
            z = model.features(prep(torch.from_numpy(getattr(data, f"x_{split}"))))
            logits = model.head(z)
        assert stored[f"{split}_features"].dtype == np.float32 and stored[f"{split}_logits"].dtype == np.float32
        assert np.array_equal(stored[f"{split}_features"], z.numpy())
        assert np.array_equal(stored[f"{split}_logits"], logits.numpy())
