"""Decode and preprocessing of video files before and after seeking to the sampled frames.

    .venv/bin/python benchmarks/bench_decode.py [--videos 3] [--frames 250] [--size 256] [--rounds 12]

Generates synthetic clips (aarm.data.synthetic: `--frames` frames at 25 fps, `--size` px square, H.264) twice:
with a keyframe every 25 frames (1 s, as cameras and streaming encoders write them) and with libx264's
default interval of 250 frames, which `make_synthetic` uses (one keyframe per 10 s clip: nothing to skip).
For each sampling (TSN evaluation K = 3 and K = 8, a 3D centre clip of 16 frames every 2) it times one
video's evaluation input as `predict` builds it (`aarm.data.clips.load_video_input`: count, sample, decode,
crop, resize, normalise) on the old path (a separate packet count, then decoding from the start up to the
last sampled frame; `read_frames(seek=False)`) and on the new one (one cached packet scan, then decoding
from the keyframe before each run of sampled frames). The packet cache is cleared before every call, so
each call pays for its scan as a first read of the file does. Both paths' inputs are checked identical
first. Old and new run in interleaved rounds (order rotating; benchmarks/common.py), every round loading
every clip; the table gives wall-clock medians per video and the paired speed-up with its 95% bootstrap
interval, and the median CPU time per video of this process (all its threads: the work done, which a busy
machine disturbs less than the wall clock).

Writes benchmarks/results/decode.json (or --out) with the host, threads and load.
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import aarm.data.video as video  # noqa: E402
from aarm.data.clips import load_video_input, sample_indices  # noqa: E402
from aarm.data.preprocessing import Preprocessing  # noqa: E402
from aarm.data.synthetic import pick_codec, synthesize, write_video  # noqa: E402
from aarm.data.transforms import eval_transform  # noqa: E402
from aarm.fileio import write_json  # noqa: E402
from benchmarks.common import interleaved_rounds, median_ms, paired_ratio, wait_for_quiet  # noqa: E402
from runtime.host import CpuUse, host_info, thread_settings, usable_cores  # noqa: E402

console = Console(width=160)
SAMPLINGS = {
    "TSN K=3": Preprocessing(layout="NKCHW", size=224, scale_size=256, segments=3),
    "TSN K=8": Preprocessing(layout="NKCHW", size=224, scale_size=256, segments=8),
    "3D 16x2": Preprocessing(layout="NCTHW", size=112, scale_size=128, segments=1, frames=16, stride=2),
}


def packet_count(path: Path) -> int:
    """The old `frame_count`: one demux pass counting packets with data."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def load_old(path: Path, p: Preprocessing) -> np.ndarray:
    """The evaluation input as before seeking: count the packets, then decode from the start (RGB, 1 view)."""
    n = packet_count(path)
    indices = sample_indices(n, p, train=False, num_clips=1)
    frames = video.read_frames(path, indices.reshape(-1).tolist(), seek=False)
    x = eval_transform(frames, p.size, p.scale_size, mean=p.mean, std=p.std)  # (K or T, 3, S, S)
    x = x.reshape(1, frames.shape[0], *x.shape[1:])
    if p.layout == "NCTHW":
        x = x.permute(0, 2, 1, 3, 4)
    return x.contiguous().numpy()


def load_new(path: Path, p: Preprocessing) -> np.ndarray:
    """The evaluation input as `predict` builds it now; the packet cache cleared, as for a first read."""
    video._scan_cached.cache_clear()
    return load_video_input(path, p).numpy()


def make_clips(work: Path, count: int, frames: int, size: int) -> dict[str, list[Path]]:
    codec, suffix = pick_codec()
    sets: dict[str, list[Path]] = {"keyframe every 25 frames": [], "libx264 default (make_synthetic)": []}
    for i in range(count):
        pixels = synthesize(i % 4, i // 4, 0, seed=7, frames=frames, size=size, trails=True)
        for name, gop in (("keyframe every 25 frames", 25), ("libx264 default (make_synthetic)", None)):
            path = work / f"clip{i}_{'gop25' if gop else 'default'}{suffix}"
            write_video(path, pixels, codec, gop=gop)
            sets[name].append(path)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3, help="clips per keyframe setting")
    parser.add_argument("--frames", type=int, default=250, help="frames per clip (25 fps)")
    parser.add_argument("--size", type=int, default=256, help="clip width and height")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decode.json")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aarm-bench-decode-") as tmp:
        console.print(f"generating {2 * args.videos} clips of {args.frames} frames at {args.size} px")
        sets = make_clips(Path(tmp), args.videos, args.frames, args.size)
        keyframes = {name: len(video._scan(paths[0]).keyframes) for name, paths in sets.items()}
        quiet = wait_for_quiet(0.5 * len(usable_cores()), args.wait)
        if not quiet["quiet"]:
            console.print(f"[bold yellow]BUSY:[/] load {quiet['load']} after {quiet['waited_s']:.0f} s; "
                          "measuring anyway (figures taken under load)")
        with CpuUse() as use:
            for set_name, paths in sets.items():
                for sampling, p in SAMPLINGS.items():
                    for path in paths:  # the same input either way, before anything is timed
                        np.testing.assert_array_equal(load_old(path, p), load_new(path, p))

                    cpu: dict[str, list[float]] = {"old": [], "new": []}

                    def each(name: str, load: Callable[[Path, Preprocessing], np.ndarray], p: Preprocessing = p,
                             paths: list[Path] = paths, cpu: dict[str, list[float]] = cpu) -> Callable[[], None]:
                        def run() -> None:
                            start = time.process_time()
                            for path in paths:
                                load(path, p)
                            cpu[name].append(1e3 * (time.process_time() - start) / len(paths))
                        return run

                    times = interleaved_rounds({"old": each("old", load_old), "new": each("new", load_new)},
                                               args.rounds)
                    per_video = {k: [[t / len(paths) for t in r] for r in v] for k, v in times.items()}
                    ratio = paired_ratio(per_video["old"], per_video["new"])
                    rows.append({"videos": set_name, "keyframes_per_clip": keyframes[set_name], "sampling": sampling,
                                 "old_ms": median_ms(per_video["old"]), "new_ms": median_ms(per_video["new"]),
                                 "speedup": ratio, "old_cpu_ms": statistics.median(cpu["old"]),
                                 "new_cpu_ms": statistics.median(cpu["new"]), "rounds_ms": per_video,
                                 "cpu_ms": cpu})
                    console.print(f"{set_name}, {sampling}: {rows[-1]['old_ms']:.1f} -> {rows[-1]['new_ms']:.1f} ms "
                                  f"(CPU {rows[-1]['old_cpu_ms']:.1f} -> {rows[-1]['new_cpu_ms']:.1f} ms)")
    load = use.result()
    table = Table(title=f"Decode + preprocessing per video ({args.frames} frames, {args.size} px, H.264), "
                        f"median of {args.rounds} interleaved rounds" + (" - BUSY machine" if load["busy"] else ""))
    for col in ("videos", "keyframes", "sampling", "old ms", "new ms", "speed-up", "95% interval", "CPU ms old",
                "CPU ms new"):
        table.add_column(col, justify="left" if col in ("videos", "sampling") else "right")
    for r in rows:
        s = r["speedup"]
        table.add_row(r["videos"], str(r["keyframes_per_clip"]), r["sampling"], f"{r['old_ms']:.1f}",
                      f"{r['new_ms']:.1f}", f"{s['value']:.2f}x", f"{s['low']:.2f}-{s['high']:.2f}",
                      f"{r['old_cpu_ms']:.1f}", f"{r['new_cpu_ms']:.1f}")
    console.print(table)
    console.print(f"Load: {load['load_before']} before, {load['load_after']} after; other processes used "
                  f"{load['others_cores']} cores during the rounds (busy: {load['busy']}).")
    write_json(args.out, {
        "benchmark": "decode", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": host_info(),
        "threads": thread_settings(), "quiet_wait": quiet, "load": load,
        "config": {"videos": args.videos, "frames": args.frames, "size": args.size, "rounds": args.rounds,
                   "codec": pick_codec()[0], "samplings": {k: v.to_dict() for k, v in SAMPLINGS.items()},
                   "old": "packet count + read_frames(seek=False) + eval_transform",
                   "new": "load_video_input (cached packet scan, seeking read_frames), cache cleared per call"},
        "results": rows,
    })
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
