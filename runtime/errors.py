"""Errors of the deployment layers: an artifact that does not hold up. Raised by runtime, calibration and
export; the CLI prints one line and exits non-zero (aarm.errors holds the base class)."""

from aarm.errors import AarmError


class ArtifactError(AarmError):
    """An exported artifact (ONNX graph, engine, sidecar) that is missing, broken or does not match."""
