"""HTML and Markdown reports from bench, parity and regress JSON results.

`build_report(["bench.json", "parity.json"], "report.html")` writes one self-contained HTML page (plots
embedded as base64 PNG, drawn with matplotlib's Agg backend), a Markdown file beside it (`report.md`) with
the same tables, and the plots as PNG files in `report_files/` for the Markdown to link. Plots: latency
distribution per artifact (box plots of the raw per-iteration samples), throughput by batch size, parity
and accuracy per precision.
"""

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aarm.errors import ConfigError
from aarm.fileio import atomic_path, check_writable, write_text
from runtime.bench_result import BenchResult, BenchRow, bench_columns, bench_notes, bench_rows

KINDS = ("bench", "parity", "regress")
PARITY_COLUMNS = ["artifact", "precision", "inputs", "samples", "NaN/Inf", "max abs", "max rel", "min cosine",
                  "top-1", "top-5", "accuracy", "ref accuracy", "drop", "result"]
# regress measures a cost against a budget, so its ratio stays a latency ratio (lower is faster), said so
REGRESS_COLUMNS = ["artifact", "status", "latency / reference workload (x, lower is faster)", "interval",
                   "recorded ratio", "limit", "reason"]


def load_results(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Read result JSONs; each must carry a known "kind" (bench, parity or regress)."""
    if not paths:
        raise ConfigError("no result files given")
    results = []
    for p in paths:
        p = Path(p)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"result file not found: {p}") from None
        except ValueError as exc:
            raise ConfigError(f"{p}: not JSON ({exc})") from None
        items = data if isinstance(data, list) else [data]
        for item in items:
            if not isinstance(item, dict) or item.get("kind") not in KINDS:
                raise ConfigError(f"{p}: not a bench, parity or regress result (no known \"kind\" field)")
            results.append({**item, "_source": str(p)})
    return results


def _parity_judged(result: dict[str, Any], inputs: str) -> bool:
    """Whether a parity result judged an input set (older results without "judged": every set)."""
    return bool(result.get("judged", {}).get(inputs, True))


def parity_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per input set; "result" says pass, FAIL, or "not judged" for a set only shown (NaN/Inf
    fails it all the same)."""
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else fmt.format(v)

    rows = []
    for inputs, m in result["metrics"].items():
        acc = m.get("accuracy")
        failed = [f for f in result["failures"] if f.startswith(inputs + ":")]
        verdict = "FAIL" if failed else ("pass" if _parity_judged(result, inputs) else "not judged")
        rows.append((
            result["artifact"]["name"], str(result.get("precision")), inputs, str(m["samples"]),
            f"{m.get('artifact_nonfinite', 0)}/{m.get('reference_nonfinite', 0)}", num(m["max_abs"], "{:.2e}"),
            num(m["max_rel"], "{:.2e}"), num(m["min_cosine"], "{:.6f}"), num(m["top1"] and 100 * m["top1"], "{:.1f}%"),
            num(m["top5"] and 100 * m["top5"], "{:.1f}%"),
            f"{100 * acc:.1f}%" if acc is not None else "-",
            f"{100 * m['reference_accuracy']:.1f}%" if acc is not None else "-",
            f"{100 * m['accuracy_drop']:+.1f} pt" if acc is not None else "-",
            verdict,
        ))
    return rows


def regress_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    m = result.get("measurement") or {}
    return [(
        result["artifact"], result["status"], f"{m['ratio']:.3f}x" if m else "-",
        f"{m['low']:.3f}-{m['high']:.3f}" if m else "-",
        f"{result['baseline_ratio']:.3f}x" if result.get("baseline_ratio") else "-",
        f"{result['threshold']:.3f}x" if result.get("threshold") else "-", result["reason"],
    )]


@dataclass
class Figure:
    name: str
    title: str
    png: bytes


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[tuple[str, ...]]
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # paragraphs under the table (BUSY ones are highlighted)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _labels(items: list[BenchRow]) -> list[str]:
    """Artifact names, with the provider added where a name repeats."""
    names = [i.name for i in items]
    return [f"{i.name} ({i.provider})" if names.count(i.name) > 1 else i.name for i in items]


def bench_figures(results: list[BenchResult]) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [r for res in results for r in res.rows]
    figures = []
    for batch in sorted({r.batch for r in items}):
        at = [r for r in items if r.batch == batch]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(at) + 2), 3.8))
        samples = [r.samples_ms for r in at]
        ax.boxplot(samples, showfliers=True)
        ax.set_xticks(range(1, len(at) + 1), _labels(at), rotation=20, ha="right")
        low, high = min(min(s) for s in samples), max(max(s) for s in samples)
        if low > 0 and high / low > 10:  # a slow artifact (or its outliers) would flatten the others' boxes
            ax.set_yscale("log")
        ax.set_ylabel("latency per call (ms)" + (", log scale" if ax.get_yscale() == "log" else ""))
        ax.grid(axis="y", alpha=0.3)
        figures.append(Figure(f"latency_batch{batch}", f"Latency distribution, batch {batch}", _png(fig)))
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    keys: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for r in items:
        keys.setdefault((r.name, r.provider, r.precision), []).append((r.batch, r.throughput.clips_per_s))
    for (name, provider, precision), pts in keys.items():
        pts.sort()
        ax.plot([b for b, _ in pts], [t for _, t in pts], marker="o", label=f"{name} ({provider}, {precision})")
    ax.set_xlabel("batch size")
    ax.set_ylabel("clips / s")
    ax.set_xscale("log", base=2)
    batches = sorted({r.batch for r in items})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_title("Throughput by batch size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the plot: inside, it hid lines
    figures.append(Figure("throughput", "Throughput by batch size", _png(fig)))
    return figures


def parity_figures(results: list[dict[str, Any]]) -> list[Figure]:
    """Max relative error against its limit (log scale), top-1/top-5 agreement, and accuracy on labelled
    clips where measured; one bar group per artifact, sorted by precision, each on the first input set
    its verdict judged (named under the bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    order = {"fp32": 0, "fp16": 1, "int8": 2}
    results = sorted(results, key=lambda r: (order.get(str(r.get("precision")), 9), r["artifact"]["name"]))
    labels = [f"{r['artifact']['name']}\n{r.get('precision')}" for r in results]
    x = np.arange(len(results))
    judged = [next((k for k in r["metrics"] if _parity_judged(r, k)), next(iter(r["metrics"]))) for r in results]
    labels = [f"{label}\n({inputs})" for label, inputs in zip(labels, judged, strict=True)]
    first = [r["metrics"][k] for r, k in zip(results, judged, strict=True)]
    has_data = any("data" in r["metrics"] for r in results)
    fig, axes = plt.subplots(1, 3 if has_data else 2, figsize=(max(9.0, 2.2 * len(results) + 6), 3.8))
    ax = axes[0]
    colors = ["tab:red" if r["failures"] else "tab:green" for r in results]
    ax.bar(x, [max(m["max_rel"] or 0.0, 1e-12) for m in first], 0.6, color=colors)
    for i, r in enumerate(results):
        limit = r["tolerances"].get("max_rel")
        if limit:
            ax.hlines(limit, i - 0.4, i + 0.4, colors="black", linestyles="dashed")
    ax.set_yscale("log")
    ax.set_title("Max relative error on the judged inputs (dashed: limit)")
    ax.set_xticks(x, labels, fontsize=7)
    ax = axes[1]
    shown = ["top1"] + (["top5"] if any(m.get("top5") is not None for m in first) else [])  # None: <= 5 classes
    for j, key in enumerate(shown):
        ax.bar(x + (j - (len(shown) - 1) / 2) * 0.4, [m[key] or 0.0 for m in first], 0.4,
               label=key.replace("top", "top-"))
    low = min(m[key] or 0.0 for m in first for key in shown)
    ax.set_ylim(max(0.0, low - 0.05), 1.01)
    ax.set_xticks(x, labels, fontsize=7)
    if len(shown) > 1:
        ax.set_title("Agreement with the reference")
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    else:  # one series: the title names it (a legend box sat on the lowest bar)
        ax.set_title("Top-1 agreement with the reference")
    if has_data:
        ax = axes[2]
        data = [r["metrics"].get("data", {}) for r in results]
        ax.bar(x - 0.2, [d.get("accuracy", 0.0) for d in data], 0.4, label="artifact")
        ax.bar(x + 0.2, [d.get("reference_accuracy", 0.0) for d in data], 0.4, label="reference")
        ax.set_ylim(0, 1.05)
        ax.set_title("Accuracy on labelled clips")
        ax.set_xticks(x, labels, fontsize=7)
        ax.legend(fontsize=7)
    return [Figure("parity", "Parity and accuracy per precision", _png(fig))]


def build_sections(results: list[dict[str, Any]]) -> list[Section]:
    sections = []
    bench = [(r.get("_source", ""), BenchResult.from_json(r)) for r in results if r["kind"] == "bench"]
    parity = [r for r in results if r["kind"] == "parity"]
    regress = [r for r in results if r["kind"] == "regress"]
    for i, (source, r) in enumerate(bench):  # one table per bench run: each names its own speed-up baseline
        title = "Benchmark" if len(bench) == 1 else f"Benchmark ({Path(source).name})"
        sections.append(Section(title, bench_columns(r), bench_rows(r),
                                bench_figures([b for _, b in bench]) if i == 0 else [], notes=bench_notes(r)))
    if parity:
        sections.append(Section("Parity", PARITY_COLUMNS, [row for r in parity for row in parity_rows(r)],
                                parity_figures(parity)))
    if regress:
        sections.append(Section("Latency regression", REGRESS_COLUMNS,
                                [row for r in regress for row in regress_rows(r)]))
    return sections


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.3em .6em}
th{background:#f2f2f2}td{text-align:right}td:first-child{text-align:left}img{max-width:100%}
.fail{color:#b00;font-weight:bold}.warn{color:#a60;font-weight:bold}p.note{font-size:.85em;margin:.3em 0}"""


def render_html(sections: list[Section], sources: list[str], created: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>AARM runtime report</title>"
             f"<style>{_CSS}</style></head><body><h1>AARM runtime report</h1>"
             f"<p>{html.escape(created)} &middot; from {html.escape(', '.join(sources))}</p>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.columns:
            parts.append("<table><tr>")
            parts += [f"<th>{html.escape(c)}</th>" for c in s.columns]
            parts.append("</tr>")
            for row in s.rows:
                cells = "".join(
                    f"<td class='fail'>{html.escape(v)}</td>" if v in ("FAIL", "fail")
                    else f"<td class='warn'>{html.escape(v)}</td>" if v.endswith(" WIDE")
                    else f"<td>{html.escape(v)}</td>"
                    for v in row)
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</table>")
        parts += [f"<p class='{'note warn' if n.startswith('BUSY') else 'note'}'>{html.escape(n)}</p>"
                  for n in s.notes]
        for f in s.figures:
            data = base64.b64encode(f.png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(f.title)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(f.title)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "".join(parts)


def render_markdown(sections: list[Section], sources: list[str], created: str, figure_dir: str) -> str:
    def cell(v: str) -> str:
        return v.replace("|", "\\|").replace("\n", " ")

    lines = ["# AARM runtime report", "", f"{created}, from {', '.join(sources)}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.columns:
            lines += ["| " + " | ".join(s.columns) + " |",
                      "|" + "|".join(["---"] + ["---:"] * (len(s.columns) - 1)) + "|"]
            lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in s.rows]
            lines.append("")
        lines += [f"{'**' + n + '**' if n.startswith('BUSY') else n}\n" for n in s.notes]
        lines += [f"![{f.title}]({figure_dir}/{f.name}.png)\n" for f in s.figures]
    return "\n".join(lines) + "\n"


def build_report(
    results: Sequence[str | Path], out: str | Path, *, force: bool = False, images: Sequence[str | Path] = ()
) -> tuple[Path, Path]:
    """Write `out` (HTML), `<out stem>.md` and `<out stem>_files/*.png`; returns the HTML and Markdown paths.

    images: extra PNG files (e.g. `aarm-export explain` attention maps) shown in a section of their own."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"report output must be an .html file, got {out}")
    md = out.with_suffix(".md")
    check_writable(out, force)
    check_writable(md, force)
    loaded = load_results(results)
    sections = build_sections(loaded)
    if images:
        figures = []
        for p in map(Path, images):
            if not p.is_file():
                raise ConfigError(f"image not found: {p}")
            figures.append(Figure(name=p.stem, title=p.name, png=p.read_bytes()))
        sections.append(Section("Attention maps (STAM, CAM)", [], [], figures))
    created = datetime.now(UTC).isoformat(timespec="seconds")
    sources = [str(p) for p in results]
    fig_dir = out.parent / f"{out.stem}_files"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for s in sections:
        for f in s.figures:
            with atomic_path(fig_dir / f"{f.name}.png") as tmp:
                tmp.write_bytes(f.png)
    write_text(out, render_html(sections, sources, created))
    write_text(md, render_markdown(sections, sources, created, fig_dir.name))
    return out, md
