"""Static facts about the supported data sets (no heavy imports: the Snakefile reads this)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    size: int  # images are size x size
    scale: float  # raw pixel maximum (pixels are stored as uint8 in [0, scale])
    has_test_split: bool  # an official test split exists
    train_counts: tuple[int, ...] = ()  # images per class of the training pool (every image without a test split)


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 10, 1, 8, 16.0, False, (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, 1, 28, 255.0, True, (6000,) * 10),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, 255.0, True, (5000,) * 10),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, 255.0, True, (500,) * 100),
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        from ..core.errors import ConfigError

        raise ConfigError(
            f"unknown dataset '{name}'; allowed: {', '.join(sorted(DATASETS))}"
        ) from None
