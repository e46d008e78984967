"""Typed errors. Library code raises these; the CLI prints one line and exits non-zero. A message names a
parameter by its Python name in backquotes (`force`); the CLI shows it as the flag (export/help_format.py)."""


class AarmError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(AarmError):
    """An unknown model name, attention kind or option, or an invalid combination of them."""


class CheckpointError(AarmError):
    """A weights or checkpoint file that is missing, unreadable, unsafe or does not fit the model."""


class DataError(AarmError):
    """A video, frame folder or annotation file that is missing, unreadable or inconsistent."""


class BackendUnavailable(AarmError):
    """An optional backend or package (TensorRT, CUDA, OpenCV's optical flow) that is not installed or cannot run
    here. It stays here because the model package raises it too (ArtifactError lives in runtime.errors)."""
