"""Settings shared by the benchmarks: the synthetic dataset and training recipe used to get a trained model."""

from typing import Any


def synthetic_recipe() -> dict[str, Any]:
    """Synthetic set and ResNet-18 TSN training settings sized for a 2-core CPU (a few minutes per model).

    Classes differ only in the direction of motion; trails make the direction visible in single frames,
    which is what a 2D TSN with average consensus can learn from. Flips are off (the set says so)."""
    return {
        "dataset": {"classes": 6, "videos_per_class": 30, "frames": 32, "size": 96, "seed": 0},
        "train": {"model": "resnet18", "epochs": 16, "batch_size": 8, "lr": 0.01, "size": 64, "segments": 3,
                  "schedule": "cosine", "workers": 2, "seed": 0},
    }
