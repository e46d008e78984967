"""Run every example of README.md's CLI table as written, in order, in a scratch folder, and say which pass.

    .venv/bin/python scripts/readme_examples.py --workdir /tmp/readme-examples          # as written
    .venv/bin/python scripts/readme_examples.py --workdir /tmp/readme-examples --quick  # smaller data, 1 epoch

Each example runs in --workdir with the project's `.venv/bin` first on PATH, so later examples use what
earlier ones made (data/syn, runs/r18/best.pt, model.onnx, ...), as a reader following the table would.
What the table assumes a user already has is made first and said so: `train.toml` (the `train` example's
settings as a `[train]` table) and the videos `video.mp4`, `clip.mp4`, `clip1.mp4`, `clip2.mp4` (copies of
synthetic test videos, made once `data/syn` exists). Examples that need what this machine lacks are skipped
with the reason (a real UCF101/HMDB51 tree, CUDA, several GPUs); `build` without TensorRT must fail with a
one-line error. Every failure must also be one line on stderr (no traceback). `--quick` shrinks what the
examples take long on (150 videos per class -> 12, 24 epochs -> 1) and says so in its output; the demo
example runs only with --demo (it is `make demo`).

Prints a table and writes <workdir>/readme_examples.json; exit status 1 when an example failed.
"""

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = re.compile(r"`((?:aarm-export|torchrun) [^`]+)`")
TRAIN_TOML = """[train]
data = "data/syn"
out = "runs/r18"
model = "resnet18"
attention = "aarm"
epochs = {epochs}
size = 64
optimizer = "adamw"
lr = 5e-4
batch_size = 16
"""
# (pattern in the command, reason): what this machine cannot run.
SKIPS = (
    (r"torchrun", "needs several GPUs (torchrun with --device cuda)"),
    (r"--device cuda", "needs a CUDA GPU"),
    (r"UCF101|data/hmdb|/data/hmdb51", "needs a real UCF101/HMDB51 tree (no dataset downloads here)"),
)
QUICK = ((r"--videos-per-class 150", "--videos-per-class 12"), (r"--epochs 24", "--epochs 1"))
EXPECTED_FAILURES = {"build": "TensorRT is not installable on this machine: must fail in one line"}
VIDEOS = ("video.mp4", "clip.mp4", "clip1.mp4", "clip2.mp4")


def examples(readme: Path) -> list[tuple[str, str]]:
    """(command name, example) for the first example in each row of the CLI table, in table order."""
    rows, command, inside = [], "", False
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("| command | example |"):
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        if not inside or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0]:
            command = cells[0].strip("`")
        found = EXAMPLE.search(cells[1] if len(cells) > 1 else "")
        if found:
            rows.append((command, found.group(1)))
    return rows


def provide_videos(work: Path) -> None:
    """Copy four synthetic test videos to the names the examples use (once data/syn exists)."""
    if all((work / v).exists() for v in VIDEOS) or not (work / "data" / "syn").is_dir():
        return
    found = sorted(p for p in (work / "data" / "syn").rglob("*") if p.suffix in (".avi", ".mp4", ".mkv"))
    for name, src in zip(VIDEOS, found, strict=False):
        shutil.copyfile(src, work / name)


def run(example: str, work: Path, env: dict[str, str], timeout: float) -> dict:
    """Run one example; rc, seconds and the last stderr line."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(shlex.split(example), cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)
        rc, err = proc.returncode, proc.stderr.strip()
    except subprocess.TimeoutExpired:
        rc, err = None, f"timed out after {timeout:.0f} s"
    except FileNotFoundError as exc:
        rc, err = 127, str(exc)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("W1")]  # torch's W-log lines
    return {"rc": rc, "seconds": round(time.perf_counter() - start, 1), "traceback": "Traceback" in err,
            "last_error_line": lines[-1] if lines else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="scratch folder (created; reused if present)")
    parser.add_argument("--quick", action="store_true", help="12 videos per class, 1 epoch (said in the output)")
    parser.add_argument("--demo", action="store_true", help="also run the demo example (make demo)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per example")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    (work / "train.toml").write_text(TRAIN_TOML.format(epochs=1 if args.quick else 24), encoding="utf-8")
    results = []
    for command, example in examples(args.readme):
        ran = example
        if args.quick:
            for pattern, replacement in QUICK:
                ran = re.sub(pattern, replacement, ran)
        skip = next((why for pattern, why in SKIPS if re.search(pattern, example)), None)
        if command == "demo" and not args.demo:
            skip = "the demo is `make demo` (pass --demo to run it here too)"
        row = {"command": command, "example": example, "ran": ran if ran != example else None}
        if skip:
            results.append({**row, "verdict": "skipped", "why": skip})
            print(f"skip  {command:14s} {skip}", flush=True)
            continue
        provide_videos(work)
        outcome = run(ran, work, env, args.timeout)
        expected_fail = EXPECTED_FAILURES.get(command) if importlib.util.find_spec("tensorrt") is None else None
        ok = (outcome["rc"] == 0) if expected_fail is None else (outcome["rc"] not in (0, None))
        ok = ok and not outcome["traceback"]
        verdict = ("pass" if ok else "FAIL") + (" (fails as expected)" if expected_fail and ok else "")
        results.append({**row, **outcome, "verdict": verdict, "why": expected_fail})
        print(f"{verdict.split()[0]:5s} {command:14s} rc={outcome['rc']} {outcome['seconds']:7.1f} s  "
              f"{ran}" + (f"\n      {outcome['last_error_line']}" if not ok or expected_fail else ""), flush=True)
    failed = [r for r in results if r["verdict"] == "FAIL"]
    summary = {"readme": str(args.readme), "workdir": str(work), "quick": args.quick,
               "quick_changes": [f"{a} -> {b}" for a, b in QUICK] if args.quick else [],
               "passed": sum(r["verdict"].startswith("pass") for r in results),
               "failed": len(failed), "skipped": sum(r["verdict"] == "skipped" for r in results),
               "examples": results}
    (work / "readme_examples.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped"
          + (" (--quick: " + ", ".join(summary["quick_changes"]) + ")" if args.quick else "")
          + f"; {work / 'readme_examples.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
