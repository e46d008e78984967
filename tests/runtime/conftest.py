"""Runtime tests use the shared `tiny` ResNet-18 TSN (checkpoint + ONNX), `videos` and `export_cache`
(tests/shared_fixtures.py), single-threaded PyTorch throughout."""

from shared_fixtures import CLASSES, export_cache, one_torch_thread, tiny, videos  # noqa: F401 (fixtures)
