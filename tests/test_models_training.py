import numpy as np
import pytest
import torch

from unlearn_da.core.checkpoints import load_checkpoint, save_checkpoint
from unlearn_da.core.errors import ArtifactError
from unlearn_da.core.models import build_model, model_spec
from unlearn_da.core.runtime import seed_everything
from unlearn_da.jobs.session import open_session
from unlearn_da.core.training import Preprocessor, accuracy, fit, lr_factor


@pytest.mark.parametrize("arch,channels,size", [("smallcnn", 1, 8), ("smallcnn", 1, 28), ("smallcnn", 3, 32),
                                                ("resnet18", 3, 32)])
def test_models_expose_features_and_head(arch, channels, size):
    model = build_model(model_spec(arch, 10, channels, size, 8)).eval()
    x = torch.randn(2, channels, size, size)
    z = model.features(x)
    assert z.shape == (2, model.feature_dim)
    assert torch.allclose(model.head(z), model(x))


def test_lr_schedules():
    hp = {"schedule": "cosine"}
    assert lr_factor(0, 100, hp, 10) == 1.0 and abs(lr_factor(100, 100, hp, 10)) < 1e-12
    hp = {"schedule": "multistep", "milestones": [5, 7], "gamma": 0.1}
    assert [lr_factor(s, 100, hp, 10) for s in (10, 49, 50, 69, 70)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert lr_factor(0, 100, {"schedule": "constant", "warmup_epochs": 1}, 10) == pytest.approx(0.1)


def test_multistep_drops_at_epoch_boundaries_as_salun_cifar_recipe():
    """SalUn's MultiStepLR([91, 136]) stepped once per epoch: the first step of epoch 91 already runs
    at 0.1x and that of 136 at 0.01x (a per-step fraction of 182 epochs dropped half an epoch late)."""
    steps_per_epoch = 176  # 45,000 images at batch 256
    hp = {"schedule": "multistep", "milestones": [91, 136], "gamma": 0.1}
    first = {e: lr_factor(e * steps_per_epoch, 182 * steps_per_epoch, hp, steps_per_epoch) for e in (90, 91, 135, 136)}
    assert first == pytest.approx({90: 1.0, 91: 0.1, 135: 0.1, 136: 0.01})
    assert lr_factor(91 * steps_per_epoch - 1, 182 * steps_per_epoch, hp, steps_per_epoch) == 1.0


@pytest.mark.parametrize("fill,expected", [("black", (0.0 - 0.5) / 0.25), ("mean", 0.0)])
def test_crop_padding_is_black_before_normalising_like_torchvision(fill, expected):
    """torchvision's RandomCrop(padding=4) pads pixel 0 before the model normalises; padding after
    normalising fills with the mean colour instead (kept as crop_fill: mean)."""
    prep = Preprocessor(np.full(1, 0.5), np.full(1, 0.25), 255.0, torch.device("cpu"), augment="crop",
                        padding=2, crop_fill=fill)
    x = torch.full((64, 1, 4, 4), 200, dtype=torch.uint8)
    out = prep(x, train=True, generator=torch.Generator().manual_seed(0))
    inside = (200 / 255.0 - 0.5) / 0.25
    values = set(np.round(out.unique().numpy().astype(np.float64), 4).tolist())
    assert values == set(np.round([inside, expected], 4).tolist())
    assert torch.equal(prep(x), torch.full_like(out, inside))  # eval: no padding at all


def test_random_crop_keeps_shape_and_moves_pixels():
    prep = Preprocessor(np.zeros(1), np.ones(1), 1.0, torch.device("cpu"), augment="crop_flip", padding=2)
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    out = prep(x, train=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(prep(x), x)  # no augmentation in eval


PARAMS = {"arch": "smallcnn", "model": {"width": 8}, "device": "cpu", "deterministic": True,
          "precision": {"amp": "off", "channels_last": "off"},
          "train": {"epochs": 4, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                    "schedule": "cosine"}}


def _train(digits_file, seed):
    sess = open_session(str(digits_file), PARAMS, threads=1)
    gen = seed_everything(seed)
    model = build_model(model_spec("smallcnn", 10, 1, 8, 8))
    prep = sess.preprocessor()
    before = accuracy(model, sess.x["val"], sess.y["val"], prep)
    hist = fit(model, sess.x["train"], sess.y["train"], prep, PARAMS["train"], generator=gen, log=lambda m: None)
    return model, before, accuracy(model, sess.x["val"], sess.y["val"], prep), hist


def test_fit_learns_digits_and_is_deterministic(digits_file):
    model_a, before, after, hist = _train(digits_file, seed=0)
    assert after > 85 and after > before + 40
    assert hist["history"][-1]["loss"] < hist["history"][0]["loss"]
    model_b, *_ = _train(digits_file, seed=0)
    for (k, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_checkpoint_round_trip_and_corruption(tmp_path):
    spec = model_spec("smallcnn", 10, 1, 8, 4)
    model = build_model(spec)
    path = tmp_path / "m.pt"
    save_checkpoint(model, path, "train_original", {"spec": spec, "seed": 0})
    loaded, meta = load_checkpoint(path, "train_original")
    assert meta["seed"] == 0 and all(torch.equal(a, b) for a, b in
                                     zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ArtifactError, match=r"m\.pt.*SHA-256.*train_original"):
        load_checkpoint(path, "train_original")
