"""Settings shared by the benchmarks: the synthetic dataset and training recipe used to get a trained model."""

from typing import Any


def synthetic_recipe() -> dict[str, Any]:
    """Synthetic set and ResNet-18 TSN training settings sized for a 2-core CPU (about six minutes per model).

    The four Move* classes differ only in the direction of motion; trails make the direction visible in
    single frames, which is what a 2D TSN with average consensus can learn from. Flips are off (the set
    says so). Trained from scratch (no ImageNet weights here), so the recipe departs from the paper's
    fine-tuning defaults where measurements said it must (GPU sweep, 2026-11-27, in docs/train.md):
    - AdamW, not SGD: from scratch, SGD (lr 0.01-0.03) left every AARM model at chance in the steps a CPU
      run affords; AdamW at 5e-4 learns. AARM's gates prefer the lower rate (1e-3 stalled more runs).
    - many videos seen few times: 150 per class with 24 epochs generalises to unseen backgrounds;
      30-60 per class seen 30 times memorised them (train 85-97%, held-out 30-70%).
    """
    return {
        "dataset": {"classes": 4, "videos_per_class": 150, "frames": 32, "size": 96, "seed": 0},
        "train": {"model": "resnet18", "epochs": 24, "batch_size": 16, "optimizer": "adamw", "lr": 5e-4,
                  "size": 64, "segments": 3, "schedule": "cosine", "workers": 2, "seed": 0},
    }
