"""What every torch job sets up first: runtime, device, data tensors on the device, preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..core import device_pool

from ..core import runtime
from ..core.cuda_check import require_cuda
from ..core.errors import ArtifactError, short
from ..data.backdoor import Poison, poisoned_train
from ..data.prepared import PreparedData, load_prepared
from ..core.training import Preprocessor


@dataclass
class Session:
    device: torch.device
    amp: bool
    channels_last: bool
    compile: bool  # torch.compile the model a job trains (precision.compile)
    data: PreparedData
    x: dict[str, torch.Tensor]  # train / val / test images (uint8) on the device; a backdoor adds "trigger"
    y: dict[str, torch.Tensor]
    poison: Poison | None = None  # set in backdoor scenarios: train holds the poisoned samples

    def preprocessor(self, augment: str = "none", padding: int = 0, crop_fill: str = "black") -> Preprocessor:
        return Preprocessor(
            self.data.mean, self.data.std, self.data.info.scale, self.device,
            augment=augment, padding=padding, channels_last=self.channels_last, crop_fill=crop_fill,
        )

    def check_model(self, path: str, meta: dict[str, Any], made_by: str, seed: int | None = None,
                    role: str | None = None) -> None:
        """Refuse a checkpoint that is not the one this job expects: made for another data set (its
        spec's classes, channels or image size, or the data checksum it records), another seed or
        another role (a copied or renamed file passes its own checksum but not this)."""
        info = self.data.info
        spec = meta.get("spec", {})
        expected = {"num_classes": info.num_classes, "in_channels": info.channels, "image_size": info.size}
        wrong = [f"{k} {short(spec.get(k))} (this data set: {v})" for k, v in expected.items() if spec.get(k) != v]
        recorded = meta.get("data_sha256")
        if recorded is not None and self.data.sha256 is not None and recorded != self.data.sha256:
            wrong.append(f"trained on data with checksum {short(recorded, 20)} (this data set: {self.data.sha256[:16]}…)")
        if seed is not None and meta.get("seed") != seed:
            wrong.append(f"seed {short(meta.get('seed'))} (this job: {seed})")
        if role is not None and meta.get("role") != role:
            wrong.append(f"role {short(meta.get('role'))} (this job needs: {role})")
        if wrong:
            raise ArtifactError(f"{path}: not the model this job expects: " + "; ".join(wrong)
                                + f" (made by rule '{made_by}'); delete it and rerun the pipeline")

    def subset(self, split: str, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        return self.x[split][index], self.y[split][index]

    def with_poison(self, poison: Poison | None) -> Session:
        """This session's device and settings with the data a job of ``poison``'s scenario sees (a
        backdoor oracle trains on clean data but its features are those of the poisoned train set)."""
        if poison is self.poison:
            return self
        x, y = device_tensors(self.data, poison, self.device)
        return replace(self, x=x, y=y, poison=poison)


def device_tensors(data: PreparedData, poison: Poison | None, device: torch.device
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Images and labels of every split on ``device``; with a backdoor ``poison`` the train set holds
    the poisoned images and labels at the forget indices, and ``trigger`` the triggered non-target
    test images with their clean labels (for the attack success rate)."""
    host_x = {s: getattr(data, f"x_{s}") for s in ("train", "val", "test")}
    host_y = {s: getattr(data, f"y_{s}") for s in ("train", "val", "test")}
    if poison is not None:
        host_x["train"], host_y["train"] = poisoned_train(data.x_train, data.y_train, poison)
        host_x["trigger"], host_y["trigger"] = poison.test_images, data.y_test[poison.test_index]
    x = {s: torch.from_numpy(np.ascontiguousarray(a)).to(device) for s, a in host_x.items()}
    y = {s: torch.from_numpy(np.ascontiguousarray(a)).to(device) for s, a in host_y.items()}
    return x, y


def open_session(data_path: str, params: dict[str, Any], threads: int, poison: Poison | None = None,
                 timed: bool = False) -> Session:
    """Pin threads, pick the device (a slot of the GPU pool, ``device_pool``), move the data set onto it.

    With a backdoor ``poison`` the train set holds the poisoned images and labels at the forget
    indices (every job of the scenario sees the same data), and ``trigger`` holds the triggered
    non-target test images with their clean labels (for the attack success rate).
    """
    # a GPU job takes a free (device, slot) of the machine's pool before it touches CUDA
    # (``timed``: its seconds are reported, so with gpu.exclusive_timing it holds its whole GPU)
    require_cuda(params.get("device", "auto"))  # a GPU profile never trains on the CPU without a word
    device = device_pool.place_job(runtime.select_device(params.get("device", "auto")), timed=timed)
    runtime.setup(threads, device, bool(params.get("deterministic", True)))
    if timed:  # torch.optim's lazy import, paid before the job's clock starts (Time and RTE)
        runtime.import_optimizer_machinery()
    precision = params.get("precision", {"amp": "auto", "channels_last": "auto"})
    data = load_prepared(data_path)
    x, y = device_tensors(data, poison, device)
    return Session(
        device=device,
        amp=runtime.resolve_switch(precision["amp"], runtime.amp_default(device)),
        channels_last=runtime.resolve_switch(precision["channels_last"], runtime.channels_last_default(device)),
        compile=runtime.resolve_switch(precision.get("compile", "auto"), runtime.compile_default(device)),
        data=data,
        x=x,
        y=y,
        poison=poison,
    )
