"""Typed errors. Library code raises these; the CLI prints one line and exits non-zero."""


class AarmError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(AarmError):
    """An unknown model name, attention kind or option, or an invalid combination of them."""


class CheckpointError(AarmError):
    """A weights or checkpoint file that is missing, unreadable, unsafe or does not fit the model."""


class DataError(AarmError):
    """A video, frame folder or annotation file that is missing, unreadable or inconsistent."""


class ArtifactError(AarmError):
    """An exported artifact (ONNX graph, engine, sidecar) that is missing, broken or does not match."""


class BackendUnavailable(AarmError):
    """An optional backend (TensorRT, CUDA) that is not installed or cannot run here."""
