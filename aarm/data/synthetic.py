"""A synthetic action dataset whose classes differ only over time, written as real videos in UCF101's layout.

    make_synthetic(Path("synth"), classes=8, videos_per_class=30, seed=0)
    load_split(Path("synth"), split=1, subset="train")      # format auto-detected as UCF101

    synth/videos/<Class>/v_<Class>_gXX_cYY.mp4 (H.264, yuv420p; MPEG-4 Part 2 .avi without libx264)
    synth/ucfTrainTestlist/{classInd.txt, trainlist01.txt, testlist01.txt}
    synth/dataset.json                                      classes, seed, parameters, split sizes

Each video shows one textured object (ellipse, rectangle, triangle, cross or star with stripes; random
colours, size, orientation, position, speed) over a textured, noisy background that the camera pans, with
a slight per-frame flicker. Classes come in pairs that are each other's time reversal: MoveLeft/MoveRight,
MoveUp/MoveDown, RotateClockwise/RotateCounterclockwise, Grow/Shrink, OrbitClockwise/OrbitCounterclockwise.
Every trajectory is centred on the middle of the clip, so the reversed twin of a video (same parameters,
the other class of the pair) is the same frames in reverse order, background pan and noise included:
without trails, the set of frames of a video, hence any single frame, carries no class information.
All classes draw positions, sizes and looks from the same distributions, so single frames of different
pairs are alike too (as statistics, not frame for frame).

Trails (on by default, `trails=False` / `--no-trails` removes them). A TSN-RGB model with K = 3 segments
sees three single frames and averages their scores: the frames' order, the only class information above,
is lost. Real action frames carry motion locally (a pose, a blurred limb); to give the synthetic frames the
same kind of cue, each frame also draws the object's recent past like a long exposure: faded filled copies
of its last few states under the object (a comet tail behind a moving object) and faded outlines of them on
top (visible for rotation and growth, where the object hides its own past). Older copies fade more, so a
single frame shows which way the object goes. With trails a 2D TSN can learn every class from single
frames; without them only a model that sees frame order (3D, or flow) can do better than chance within a
pair.

Deterministic for a seed: the background of group g comes from numpy's generator seeded with (seed, g) and
is shared by every clip of the group in every class, as UCF101's groups share a place (here across
classes too, so the scenery says nothing about the class); the object's look, trajectory and noise of video
(class c, group g, clip i) come from (seed, c, g, i). The test split takes whole groups (about a quarter),
so test videos show backgrounds never seen in training. Encoding is deterministic too (one encoder thread,
x264's macroblock tree off: see `write_video`), so a seed gives byte-identical video and annotation files
whatever the number of workers.

Training on it: horizontal flipping turns MoveLeft into MoveRight and clockwise into counter-clockwise, so
a model trained with flip augmentation cannot learn those classes; train with flipping off
(`VideoDataset(..., flip=False)`). dataset.json records whether flipping is safe as "horizontal_flip".
"""

import json
import math
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from aarm.errors import ConfigError, DataError
from aarm.progress import Progress


@dataclass(frozen=True)
class ActionClass:
    """A class: which state moves (horizontal, vertical, rotate, scale, orbit) and in which direction."""

    name: str
    motion: str
    sign: int


CLASSES: tuple[ActionClass, ...] = (
    ActionClass("MoveLeft", "horizontal", -1),
    ActionClass("MoveRight", "horizontal", 1),
    ActionClass("MoveUp", "vertical", -1),
    ActionClass("MoveDown", "vertical", 1),
    ActionClass("RotateClockwise", "rotate", 1),
    ActionClass("RotateCounterclockwise", "rotate", -1),
    ActionClass("Grow", "scale", 1),
    ActionClass("Shrink", "scale", -1),
    ActionClass("OrbitClockwise", "orbit", 1),
    ActionClass("OrbitCounterclockwise", "orbit", -1),
)
SHAPES = ("ellipse", "rectangle", "triangle", "cross", "star")
MIRRORED_MOTIONS = frozenset({"horizontal", "rotate", "orbit"})  # a left-right mirror reverses these
CLIPS_PER_GROUP = 4
FPS = 25
GHOSTS = 5  # past states drawn as a trail, reaching GHOSTS * GHOST_GAP frames back
GHOST_GAP = 3.0  # frames between two of them
GHOST_FILL = 0.8  # opacity of the newest filled copy; each older one x GHOST_FADE
GHOST_LINE = 0.6  # opacity of the newest outline
GHOST_FADE = 0.65
OBJECT_RADIUS = (0.1, 0.16)  # object radius as a fraction of the frame, log-uniform
TRANSLATE_SPEED = (2.0, 3.2)  # px / frame at 112 px
TEXTURE_GAIN = 0.5  # background texture and clutter contrast


def list_classes() -> list[str]:
    return [c.name for c in CLASSES]


@dataclass(frozen=True)
class Scene:
    """How one clip looks: the object (shape, colours, stripes) and the background (shared by a group)."""

    shape: str
    aspect: float
    colour_a: tuple[float, float, float]
    colour_b: tuple[float, float, float]
    stripe_freq: float
    stripe_angle: float
    stripe_phase: float
    background: np.ndarray = field(repr=False)  # (Hb, Wb, 3) float32 in [0, 1], larger than a frame


@dataclass(frozen=True)
class Motion:
    """One clip's trajectory, centred on the clip's middle (tau = t - (T - 1) / 2), and camera."""

    centre: tuple[float, float]  # (x, y) pixels at tau = 0
    radius: float  # object radius in pixels at tau = 0
    angle: float  # orientation at tau = 0 (radians; growing angles turn clockwise on screen)
    speed: float  # px / frame (translations), rad / frame (rotation, orbit), log-scale / frame (scale)
    orbit_radius: float
    orbit_phase: float
    pan_centre: tuple[float, float]  # background offset at tau = 0
    pan_velocity: tuple[float, float]  # px / frame
    noise: float  # std of the per-pixel sensor noise (uniform), in [0, 1] units
    flicker: float  # std of the per-frame brightness gain


def _value_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """(height, width, 3) smooth noise in [-1, 1]: random values on a grid every `cells` px, smoothstep-blended."""
    grid = rng.uniform(-1, 1, size=(height // cells + 2, width // cells + 2, 3)).astype(np.float32)

    def axis(n: int) -> tuple[np.ndarray, np.ndarray]:
        pos = (np.arange(n, dtype=np.float32) + 0.5) / cells
        i = np.floor(pos).astype(np.int64)
        f = pos - i
        return i, f * f * (3 - 2 * f)

    yi, fy = axis(height)
    xi, fx = axis(width)
    fx = fx[None, :, None]
    top = grid[yi][:, xi] * (1 - fx) + grid[yi][:, xi + 1] * fx
    bottom = grid[yi + 1][:, xi] * (1 - fx) + grid[yi + 1][:, xi + 1] * fx
    return top * (1 - fy[:, None, None]) + bottom * fy[:, None, None]


def draw_background(rng: np.random.Generator, size: int, pad: int) -> np.ndarray:
    """(size + 2 pad)^2 x 3 float32 background in [0, 1]: colour base, three octaves of texture, soft blobs."""
    hb = wb = size + 2 * pad
    bg = np.broadcast_to(rng.uniform(0.25, 0.75, size=3).astype(np.float32), (hb, wb, 3)).copy()
    for cells, amp in ((max(4, size // 3), 0.18), (max(3, size // 10), 0.12), (2, 0.05)):
        bg += np.float32(TEXTURE_GAIN * amp * rng.uniform(0.5, 1.5)) * _value_noise(rng, hb, wb, cells)
    yy = np.arange(hb, dtype=np.float32)[:, None]
    xx = np.arange(wb, dtype=np.float32)[None, :]
    for _ in range(int(rng.integers(2, 6))):  # soft clutter blobs
        cx, cy = rng.uniform(0, wb), rng.uniform(0, hb)
        r = rng.uniform(0.04, 0.12) * size
        blob = np.exp(-((xx - np.float32(cx)) ** 2 + (yy - np.float32(cy)) ** 2) / np.float32(2 * r * r))
        bg += np.float32(TEXTURE_GAIN) * rng.uniform(-0.25, 0.25, size=3).astype(np.float32) * blob[..., None]
    return np.clip(bg, 0.0, 1.0)


def draw_scene(rng: np.random.Generator, size: int, pad: int, background: np.ndarray | None = None) -> Scene:
    """A random object look (shape, colours, stripes) over `background` (drawn from `rng` after the look
    when not given)."""
    a = rng.uniform(0.05, 0.95, size=3)
    b = np.clip(a + rng.choice([-1.0, 1.0], size=3) * rng.uniform(0.3, 0.6, size=3), 0.0, 1.0)
    look = dict(
        shape=str(rng.choice(SHAPES)), aspect=float(rng.uniform(0.4, 0.65)),
        colour_a=tuple(float(v) for v in a), colour_b=tuple(float(v) for v in b),
        stripe_freq=float(rng.uniform(0.8, 1.8)), stripe_angle=float(rng.uniform(0, math.pi)),
        stripe_phase=float(rng.uniform(0, 2 * math.pi)),
    )
    return Scene(**look, background=draw_background(rng, size, pad) if background is None else background)


def draw_motion(rng: np.random.Generator, motion: str, frames: int, size: int, pad: int) -> Motion:
    """A random trajectory of the given kind that keeps the object mostly inside the frame.

    The same draws happen in the same order for every kind, so one rng state gives every class the same
    centre, size, orientation, camera and noise: the classes differ only in what moves.
    """
    if motion not in ("horizontal", "vertical", "rotate", "scale", "orbit"):
        raise ConfigError(f"unknown synthetic motion {motion!r}")
    k = size / 112.0
    span = max(frames - 1, 1)
    radius = size * math.exp(rng.uniform(math.log(OBJECT_RADIUS[0]), math.log(OBJECT_RADIUS[1])))
    cx, cy = (float(v) for v in rng.uniform(0.3 * size, 0.7 * size, size=2))
    angle = float(rng.uniform(0, 2 * math.pi))
    translate = min(rng.uniform(*TRANSLATE_SPEED) * k, 0.6 * size / span)  # px / frame
    rotate = math.radians(rng.uniform(3.0, 6.0))  # rad / frame
    scale = math.log(rng.uniform(2.0, 3.0)) / span  # log-size / frame
    orbit = min(math.radians(rng.uniform(5.0, 9.0)), 1.75 * math.pi / span)  # rad / frame
    orbit_radius = float(rng.uniform(0.12, 0.2) * size)
    # The orbit's circle lies on the frame-centre side of the object's position at tau = 0.
    orbit_phase = math.atan2(cy - size / 2, cx - size / 2) + float(rng.uniform(-math.pi / 4, math.pi / 4))
    pan_speed = min(rng.uniform(0.0, 0.8) * k, (pad - 1) / (span / 2 + 1))
    pan_dir = rng.uniform(0, 2 * math.pi)
    noise = float(rng.uniform(2.0, 6.0) / 255.0)
    speed = {"horizontal": translate, "vertical": translate, "rotate": rotate, "scale": scale, "orbit": orbit}
    return Motion(
        centre=(cx, cy), radius=float(radius), angle=angle, speed=float(speed[motion]),
        orbit_radius=orbit_radius, orbit_phase=orbit_phase, pan_centre=(float(pad), float(pad)),
        pan_velocity=(float(pan_speed * math.cos(pan_dir)), float(pan_speed * math.sin(pan_dir))),
        noise=noise, flicker=0.02,
    )


def _states(motion: str, m: Motion, tau: np.ndarray) -> tuple[np.ndarray, ...]:
    """Object (cx, cy, angle, radius) at times tau (any shape), for the class's motion with sign folded in.
    Every motion passes through the same state (m.centre, m.angle, m.radius) at tau = 0."""
    cx = np.full_like(tau, m.centre[0])
    cy = np.full_like(tau, m.centre[1])
    angle = np.full_like(tau, m.angle)
    radius = np.full_like(tau, m.radius)
    if motion == "horizontal":
        cx = cx + m.speed * tau
    elif motion == "vertical":
        cy = cy + m.speed * tau
    elif motion == "rotate":
        angle = angle + m.speed * tau
    elif motion == "scale":
        radius = radius * np.exp(m.speed * tau)
    elif motion == "orbit":
        phi = m.orbit_phase + m.speed * tau  # a circle through the centre, reached at tau = 0
        cx = cx + m.orbit_radius * (np.cos(phi) - math.cos(m.orbit_phase))
        cy = cy + m.orbit_radius * (np.sin(phi) - math.sin(m.orbit_phase))
    return cx, cy, angle, radius


def _shape_field(shape: str, u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    """A degree-1 homogeneous 'radius' of local coordinates: < 1 inside the shape, 1 on its edge."""
    if shape == "ellipse":
        return np.sqrt(u * u + (v / aspect) ** 2)
    if shape == "rectangle":
        return np.maximum(np.abs(u), np.abs(v) / aspect)
    if shape == "triangle":  # equilateral, circumradius 1, inradius 0.5
        s3 = math.sqrt(3) / 2
        return np.maximum(np.maximum(-v, s3 * u + 0.5 * v), -s3 * u + 0.5 * v) / 0.5
    if shape == "cross":
        w = 0.38
        au, av_ = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au, av_ / w), np.maximum(au / w, av_))
    if shape == "star":
        r = np.sqrt(u * u + v * v)
        return r / (0.68 + 0.32 * np.cos(5 * np.arctan2(v, u)))
    raise ConfigError(f"unknown synthetic shape {shape!r}")


def _render_objects(
    scene: Scene, cx: np.ndarray, cy: np.ndarray, angle: np.ndarray, radius: np.ndarray, left: np.ndarray,
    top: np.ndarray, window: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """States (N,) drawn in window x window patches whose top-left pixels are (left, top):
    colour (N, W, W, 3), fill alpha (N, W, W, 1), outline alpha (N, W, W, 1), float32."""
    coords = np.arange(window, dtype=np.float64) + 0.5
    dx = (left[:, None] + coords[None, :] - cx[:, None]).astype(np.float32)[:, None, :]
    dy = (top[:, None] + coords[None, :] - cy[:, None]).astype(np.float32)[:, :, None]
    c, s = np.cos(angle).astype(np.float32)[:, None, None], np.sin(angle).astype(np.float32)[:, None, None]
    r = radius.astype(np.float32)[:, None, None]
    u = (c * dx + s * dy) / r
    v = (c * dy - s * dx) / r
    edge = (1.0 - _shape_field(scene.shape, u, v, scene.aspect)) * r  # ~ signed distance to the edge, px
    fill = np.clip(edge + 0.5, 0.0, 1.0)
    line = np.clip(1.25 - np.abs(edge), 0.0, 1.0)
    ca, sa = np.float32(math.cos(scene.stripe_angle)), np.float32(math.sin(scene.stripe_angle))
    stripes = np.sin(np.float32(2 * math.pi * scene.stripe_freq) * (u * ca + v * sa) + np.float32(scene.stripe_phase))
    t = 0.5 + 0.5 * np.clip(2.0 * stripes, -1.0, 1.0)  # soft-edged stripes
    a, b = np.asarray(scene.colour_a, np.float32), np.asarray(scene.colour_b, np.float32)
    colour = a + (b - a) * t[..., None]
    return colour, fill[..., None], line[..., None]


def render_video(
    action: ActionClass, scene: Scene, motion: Motion, *, frames: int, size: int, trails: bool,
    noise_rng: np.random.Generator,
) -> np.ndarray:
    """(T, S, S, 3) uint8 frames of one clip.

    Class direction enters only as time's sign: the state at frame t is the pair's forward state at
    sign * (t - (T - 1) / 2), and the background pan, noise and flicker of frame t are those of frame
    T - 1 - t when the sign is negative. Without trails the two classes of a pair are exact reversals.
    """
    tau = np.arange(frames, dtype=np.float64) - (frames - 1) / 2.0
    ghosts = GHOSTS if trails else 0
    # Times of the current state (j = 0) and of the ghosts (j = 1..G) of every frame: (T, G + 1).
    times = tau[:, None] - GHOST_GAP * np.arange(ghosts + 1)[None, :]
    cx, cy, angle, radius = (a.ravel() for a in _states(action.motion, motion, action.sign * times))

    # Objects are drawn in square windows around each state, clipped to the frame.
    half = int(math.ceil(radius.max())) + 2
    window = 2 * half
    left = np.floor(cx).astype(np.int64) - half
    top = np.floor(cy).astype(np.int64) - half
    colour, fill, line = _render_objects(scene, cx, cy, angle, radius, left, top, window)
    shape = (frames, ghosts + 1)
    colour, fill, line = (a.reshape(*shape, *a.shape[1:]) for a in (colour, fill, line))
    r0, r1 = np.clip(top, 0, size), np.clip(top + window, 0, size)
    c0, c1 = np.clip(left, 0, size), np.clip(left + window, 0, size)
    boxes = np.stack([r0, r1, c0, c1, r0 - top, r1 - top, c0 - left, c1 - left], axis=-1).reshape(*shape, 8)
    visible = ((r1 > r0) & (c1 > c0)).reshape(shape)

    # Camera: background window at a panned offset; noise and flicker drawn in forward order.
    ox = np.rint(motion.pan_centre[0] + motion.pan_velocity[0] * action.sign * tau).astype(int)
    oy = np.rint(motion.pan_centre[1] + motion.pan_velocity[1] * action.sign * tau).astype(int)
    img = np.stack([scene.background[y : y + size, x : x + size] for x, y in zip(ox, oy, strict=True)])
    # Sensor noise: uniform with std `motion.noise`, from random bytes (several times cheaper than normals).
    noise = np.frombuffer(noise_rng.bytes(frames * size * size * 3), np.uint8).reshape(frames, size, size, 3)
    noise = (noise.astype(np.float32) - np.float32(127.5)) * np.float32(255.0 * motion.noise * math.sqrt(3) / 128.0)
    gain = (1.0 + motion.flicker * noise_rng.standard_normal(frames)).astype(np.float32)
    if action.sign < 0:
        noise, gain = noise[::-1], gain[::-1]

    def blend(j: int, alpha: np.ndarray, opacity: float) -> None:  # state j of every frame over the frame
        for t in range(frames):
            if visible[t, j]:
                fr0, fr1, fc0, fc1, wr0, wr1, wc0, wc1 = boxes[t, j].tolist()
                patch = img[t, fr0:fr1, fc0:fc1]
                a = alpha[t, j, wr0:wr1, wc0:wc1] * np.float32(opacity)
                patch += a * (colour[t, j, wr0:wr1, wc0:wc1] - patch)

    for j in range(ghosts, 0, -1):  # oldest first, filled copies under the object
        blend(j, fill, GHOST_FILL * GHOST_FADE ** (j - 1))
    blend(0, fill, 1.0)
    for j in range(ghosts, 0, -1):  # outlines of the past on top
        blend(j, line, GHOST_LINE * GHOST_FADE ** (j - 1))
    img *= (255.0 * gain)[:, None, None, None]
    img += noise
    img += np.float32(0.5)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


# ---------------------------------------------------------------------------------------------- encoding


def pick_codec(codec: str = "auto") -> tuple[str, str]:
    """(encoder, container suffix): libx264 in .mp4 when PyAV has it, else mpeg4 in .avi."""
    options = {"libx264": ".mp4", "h264": ".mp4", "mpeg4": ".avi"}
    if codec != "auto":
        if codec not in options:
            raise ConfigError(f"unknown codec {codec!r}; choose auto, {', '.join(options)}")
        candidates = [codec]
    else:
        candidates = list(options)
    for name in candidates:
        try:
            av.codec.Codec(name, "w")
        except (av.FFmpegError, ValueError):
            continue
        return name, options[name]
    raise DataError(f"this PyAV build cannot encode {' or '.join(candidates)}")


def write_video(path: Path, frames: np.ndarray, codec: str, fps: int = FPS, gop: int | None = None) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames (H, W even) as yuv420p video; `gop`: at most this many frames
    between keyframes (default: the encoder's, 250 for libx264 and 12 for mpeg4)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.thread_count = 1  # x264's output depends on its thread count, hence on the machine's cores
        if codec in ("libx264", "h264"):
            # mbtree=0: x264's macroblock-tree rate control reads uninitialised memory (valgrind memcheck,
            # x264 core 165 in PyAV 18's wheels), so with it the same frames encode to different bytes
            # from run to run (about half the videos of a dataset); without it the bytes are reproducible.
            # Cost, 8 videos of 32 frames at 112 px: 69 KB instead of 40 KB each, PSNR 32.6 instead of 32.1 dB.
            stream.options = {"crf": "17", "preset": "veryfast", "x264-params": "mbtree=0"}
        else:
            stream.bit_rate = 4_000_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ---------------------------------------------------------------------------------------------- dataset


@dataclass
class SyntheticSummary:
    """What make_synthetic wrote."""

    root: Path
    classes: list[str]
    train: int
    test: int
    codec: str
    seconds: float


def _pad(frames: int, size: int) -> int:
    return int(math.ceil(0.8 * size / 112.0 * (frames - 1) / 2.0)) + 2


def groups_for(videos_per_class: int) -> tuple[int, list[int]]:
    """(number of groups, test groups): about 4 clips per group, the first quarter of groups for test."""
    n_groups = max(2, math.ceil(videos_per_class / CLIPS_PER_GROUP))
    n_test = max(1, round(n_groups / 4))
    return n_groups, list(range(1, n_test + 1))


def video_name(cls: str, group: int, clip: int, suffix: str) -> str:
    return f"v_{cls}_g{group:02d}_c{clip:02d}{suffix}"


def synthesize(
    class_index: int, group: int, clip: int, *, seed: int, frames: int, size: int, trails: bool,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """The frames of video (class, group, clip) of the dataset with `seed`: (T, S, S, 3) uint8.
    `background` may pass group's background if already drawn (every class and clip of a group shares it)."""
    action = CLASSES[class_index]
    pad = _pad(frames, size)
    if background is None:
        background = draw_background(np.random.default_rng([seed, group]), size, pad)
    rng = np.random.default_rng([seed, class_index, group, clip])
    scene = draw_scene(rng, size, pad, background=background)
    motion = draw_motion(rng, action.motion, frames, size, pad)
    return render_video(action, scene, motion, frames=frames, size=size, trails=trails, noise_rng=rng)


def _write_group(
    folder: Path, class_index: int, group: int, clips: list[int], seed: int, frames: int, size: int,
    trails: bool, encoder: str, suffix: str,
) -> list[str]:
    """Synthesise and encode the clips of one (class, group); returns their file names."""
    background = draw_background(np.random.default_rng([seed, group]), size, _pad(frames, size))
    names = []
    for clip in clips:
        video = synthesize(
            class_index, group, clip, seed=seed, frames=frames, size=size, trails=trails, background=background
        )
        name = video_name(CLASSES[class_index].name, group, clip, suffix)
        write_video(folder / name, video, encoder)
        names.append(name)
    return names


def _check_params(classes: int, videos_per_class: int, frames: int, size: int, seed: int) -> None:
    if seed < 0:
        raise ConfigError(f"`seed` must be >= 0, got {seed}")
    if not 1 <= classes <= len(CLASSES):
        available = ", ".join(list_classes())
        raise ConfigError(f"`classes` must be 1..{len(CLASSES)} (available: {available}), got {classes}")
    if videos_per_class < 2:
        raise ConfigError(f"`videos_per_class` must be >= 2 (one train and one test group), got {videos_per_class}")
    if frames < 2:
        raise ConfigError(f"`frames` must be >= 2, got {frames}")
    if size < 16 or size % 2:
        raise ConfigError(f"`size` must be an even number >= 16 (yuv420p), got {size}")


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"{out} exists and is not empty; pass `force` to replace it")


def make_synthetic(
    out: Path, *, classes: int = 8, videos_per_class: int = 30, seed: int = 0, frames: int = 32, size: int = 112,
    trails: bool = True, force: bool = False, codec: str = "auto", workers: int = 1, progress: Progress | None = None,
) -> SyntheticSummary:
    """Write the synthetic dataset to `out` (see the module docstring), atomically: a temporary folder beside
    `out` renamed into place. Refuses a non-empty `out` unless `force`. `workers` > 1 synthesises groups in
    that many processes (the output does not depend on it). `progress` hears of the videos written."""
    _check_params(classes, videos_per_class, frames, size, seed)
    if workers < 1:
        raise ConfigError(f"`workers` must be >= 1, got {workers}")
    out = Path(out)
    _prepare_out(out, force)
    encoder, suffix = pick_codec(codec)
    chosen = CLASSES[:classes]
    n_groups, test_groups = groups_for(videos_per_class)
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        jobs = []  # one per (class, group): the clips of a group share a background
        for ci, action in enumerate(chosen):
            folder = tmp / "videos" / action.name
            folder.mkdir(parents=True)
            for group in range(1, n_groups + 1):
                clips = [i // n_groups + 1 for i in range(videos_per_class) if i % n_groups + 1 == group]
                jobs.append((folder, ci, group, clips, seed, frames, size, trails, encoder, suffix))
        written: dict[tuple[int, int], list[str]] = {}
        if workers == 1:
            results = ((job, _write_group(*job)) for job in jobs)
        else:
            # fork where there is one: children run numpy and PyAV only, and need no __main__ guard.
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method))
            futures = {pool.submit(_write_group, *job): job for job in jobs}
            results = ((futures[f], f.result()) for f in as_completed(futures))
        try:
            for job, names in results:
                written[job[1], job[2]] = names
                if progress is not None:
                    progress("synthesising videos", sum(map(len, written.values())), classes * videos_per_class)
        finally:
            if workers > 1:
                pool.shutdown(cancel_futures=True)
        train_lines, test_lines = [], []
        for ci, action in enumerate(chosen):
            for group in range(1, n_groups + 1):
                for name in written[ci, group]:
                    rel = f"{action.name}/{name}"
                    if group in test_groups:
                        test_lines.append(rel)
                    else:
                        train_lines.append(f"{rel} {ci + 1}")
        ann = tmp / "ucfTrainTestlist"
        ann.mkdir()
        (ann / "classInd.txt").write_text("".join(f"{i + 1} {c.name}\n" for i, c in enumerate(chosen)))
        (ann / "trainlist01.txt").write_text("".join(f"{line}\n" for line in train_lines))
        (ann / "testlist01.txt").write_text("".join(f"{line}\n" for line in test_lines))
        meta: dict[str, Any] = {
            "format": "ucf101",
            "generator": "aarm.data.synthetic",
            "classes": [c.name for c in chosen],
            "seed": seed,
            "params": {
                "classes": classes, "videos_per_class": videos_per_class, "frames": frames, "size": size,
                "trails": trails, "fps": FPS, "codec": encoder, "groups": n_groups, "test_groups": test_groups,
            },
            "splits": {"train": len(train_lines), "test": len(test_lines)},
            # Mirroring swaps MoveLeft/MoveRight and the two turning directions: train those without flips.
            "horizontal_flip": not any(c.motion in MIRRORED_MOTIONS for c in chosen),
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return SyntheticSummary(
        out, [c.name for c in chosen], len(train_lines), len(test_lines), encoder, time.perf_counter() - start
    )


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
