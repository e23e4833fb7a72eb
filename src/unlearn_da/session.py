"""What every torch job sets up first: runtime, device, data tensors on the device, preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import runtime
from .data import PreparedData, load_prepared
from .training import Preprocessor


@dataclass
class Session:
    device: torch.device
    amp: bool
    channels_last: bool
    data: PreparedData
    x: dict[str, torch.Tensor]  # train / val / test images (uint8) on the device
    y: dict[str, torch.Tensor]

    def preprocessor(self, augment: str = "none", padding: int = 0) -> Preprocessor:
        return Preprocessor(
            self.data.mean, self.data.std, self.data.info.scale, self.device,
            augment=augment, padding=padding, channels_last=self.channels_last,
        )

    def subset(self, split: str, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        return self.x[split][index], self.y[split][index]


def open_session(data_path: str, params: dict[str, Any], threads: int) -> Session:
    """Pin threads, pick the device, move the prepared data set onto it."""
    device = runtime.select_device(params.get("device", "auto"))
    runtime.setup(threads, device, bool(params.get("deterministic", True)))
    precision = params.get("precision", {"amp": "auto", "channels_last": "auto"})
    data = load_prepared(data_path)
    x = {s: torch.from_numpy(getattr(data, f"x_{s}")).to(device) for s in ("train", "val", "test")}
    y = {s: torch.from_numpy(getattr(data, f"y_{s}")).to(device) for s in ("train", "val", "test")}
    return Session(
        device=device,
        amp=runtime.resolve_switch(precision["amp"], runtime.amp_default(device)),
        channels_last=runtime.resolve_switch(precision["channels_last"], runtime.channels_last_default(device)),
        data=data,
        x=x,
        y=y,
    )
