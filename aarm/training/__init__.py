"""Training and evaluation of registered models on video datasets."""

from aarm.training.config import TrainConfig
from aarm.training.evaluate import evaluate, save_confusion_png
from aarm.training.trainer import TrainResult, build_model, build_preprocessing, predict_scores, train

__all__ = ["TrainConfig", "TrainResult", "build_model", "build_preprocessing", "evaluate", "predict_scores",
           "save_confusion_png", "train"]
