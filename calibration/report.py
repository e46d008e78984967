"""What `calibration.quantize.calibrate` did, typed: `CalibrationReport.to_json()` is the `<stem>.calibration.json`
file beside the INT8 graph (the layout the report had as a dict: tests/calibration/test_quantize.py holds it)."""

from dataclasses import asdict, dataclass, field
from typing import Any

from calibration.sensitivity import Sensitivity


@dataclass
class KeptInFloat:
    """A node the INT8 graph keeps in float, the module group the search chose it with (None: forced by the
    target or `exclude`), why, and how onnxruntime's optimised session runs it (None: not checked)."""

    node: str
    group: str | None
    reason: str
    in_session: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"node": self.node, "group": self.group, "reason": self.reason}
        return out if self.in_session is None else {**out, "in_session": self.in_session}


@dataclass
class SessionCheck:
    """Where kept-in-float nodes run in onnxruntime's optimised CPU session (`checked` False: the target runs
    elsewhere, `reason` says so): op counts of the session graph, the float and the untraceable node names."""

    checked: bool
    reason: str | None = None
    float_nodes: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    int8_kernels: int = 0
    ops: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        if not self.checked:
            return {"checked": False, "reason": self.reason}
        return {"checked": True, "optimization": "all", "float": self.float_nodes, "unknown": self.unknown,
                "int8_kernels": self.int8_kernels, "ops": self.ops}


@dataclass
class HeldOutAccuracy:
    """The INT8 graph against the float graph on labelled held-out clips (top-1 in %, drop and lost in points)."""

    clips: int
    data: str
    fp32_top1: float
    int8_top1: float
    drop: float
    lost: float
    agreement: float
    error: float
    max_drop: float | None
    points_per_clip: float
    within_budget: bool | None
    overlap_with_calibration: int


@dataclass
class QuantizationSummary:
    """How the Q/DQ graph was made and how many nodes it quantizes."""

    format: str
    activation_type: str
    weight_type: str
    per_channel: bool
    reduce_range: bool
    extra_options: dict[str, Any]
    preprocessed: bool
    graph_passes: list[str]
    quantized_nodes: int
    qdq_nodes: int


@dataclass
class CacheUse:
    path: str | None
    key: str
    hit: bool


@dataclass
class CalibrationData:
    """The clips the ranges come from, and the cache entry they were read from or written to."""

    data: str
    clips: int
    seed: int
    batch_size: int
    cache: CacheUse
    calibrator_options: dict[str, Any]


@dataclass
class CalibrationReport:
    """What `calibrate` did; `to_json()` is the `<stem>.calibration.json` file."""

    model: str
    output: str
    target: str
    target_description: str
    method: str
    quantization: QuantizationSummary
    calibration: CalibrationData
    accuracy: HeldOutAccuracy | None
    budget_note: str | None
    excluded: list[KeptInFloat]
    session: SessionCheck
    float_groups: list[str]
    sensitivity: list[Sensitivity]
    search: list[dict[str, Any]]
    table: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "output": self.output, "target": self.target,
            "target_description": self.target_description, "method": self.method,
            "quantization": asdict(self.quantization), "calibration": asdict(self.calibration),
            "accuracy": None if self.accuracy is None else asdict(self.accuracy), "budget_note": self.budget_note,
            "excluded": [e.to_json() for e in self.excluded], "session": self.session.to_json(),
            "float_groups": self.float_groups, "sensitivity": [s.to_dict() for s in self.sensitivity],
            "search": self.search, "table": self.table, "seconds": self.seconds,
        }
