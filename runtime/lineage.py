"""Lineage: does an artifact descend from a given checkpoint?

Every sidecar records its parent's path and sha256 (`write_sidecar(..., parent=...)`). `check_lineage` follows
that chain from an artifact through its parents' sidecars, over the files that are present, until a recorded
parent sha256 equals the reference's:

    check_lineage("out/model.int8.onnx", "best.pt")
    # [model.int8.onnx, model.opt.onnx, model.onnx, best.pt]  (or LineageError naming the broken link)

A parent is found where its sidecar put it (relative paths: from the working directory, then beside the child)
and must be a regular file with exactly the recorded sha256. Parents are only hashed and their sidecars read:
nothing on the chain is loaded or run.
"""

from dataclasses import dataclass
from pathlib import Path

from runtime.artifact import file_sha256, read_sidecar
from runtime.errors import ArtifactError

MAX_DEPTH = 32


class LineageError(ArtifactError):
    """An artifact that does not descend, through the sidecars present, from the reference it is compared with."""


@dataclass(frozen=True)
class Link:
    """One file on the chain: its path, sha256 and the stage that made it (None for the root checkpoint)."""

    path: Path
    sha256: str
    stage: str | None


def _candidates(recorded: str, child: Path) -> list[Path]:
    """Where a recorded parent path may be now: as written (relative to the working directory), beside the
    child with the recorded relative path, beside the child by name."""
    p = Path(recorded)
    found = []
    for c in (p, child.parent / p, child.parent / p.name):
        if c not in found:
            found.append(c)
    return found


def _find_parent(recorded: str, sha256: str, child: Path) -> Path:
    """The file the child's sidecar names as parent, with the recorded sha256; LineageError naming the link."""
    candidates = _candidates(recorded, child)
    present = [c for c in candidates if c.is_file()]
    for c in present:
        if file_sha256(c) == sha256:
            return c
    name = Path(recorded).name
    if present:
        raise LineageError(f"{child.name} -> {name}: parent's sha256 differs from the one recorded "
                           f"({present[0]} was changed after {child.name} was made from it)")
    raise LineageError(f"{child.name} -> {name}: parent file {recorded} is missing (looked for "
                       f"{', '.join(str(c) for c in candidates)}); the chain cannot be followed")


def check_lineage(artifact: str | Path, reference: str | Path) -> list[Link]:
    """Follow `artifact`'s recorded parents until one has `reference`'s sha256; return the chain, artifact first
    and reference last. LineageError when a parent is missing or changed, a sidecar is missing, or the chain
    ends (a file with no recorded parent) without reaching the reference."""
    artifact, reference = Path(artifact), Path(reference)
    if not reference.is_file():
        raise ArtifactError(f"reference not found: {reference}")
    want = file_sha256(reference)
    own = file_sha256(artifact) if artifact.is_file() else None
    if own == want:
        return [Link(artifact, own, None)]
    chain: list[Link] = []
    current, child = artifact, None
    for _ in range(MAX_DEPTH):
        try:
            sidecar = read_sidecar(current, verify=False)
        except ArtifactError as exc:
            if child is None:
                raise
            raise LineageError(f"{child.name} -> {current.name}: {exc}") from None
        sha = file_sha256(current)
        if sha != sidecar.sha256:
            raise LineageError(f"{current}: contents do not match its sidecar's sha256 (modified after export?)")
        chain.append(Link(current, sha, sidecar.stage))
        if sidecar.parent is None or sidecar.parent_sha256 is None:
            raise LineageError(f"{artifact.name} does not descend from {reference.name}: its chain ends at "
                               f"{current.name}, which records no parent")
        if sidecar.parent_sha256 == want:
            chain.append(Link(reference, want, None))
            return chain
        parent = _find_parent(sidecar.parent, sidecar.parent_sha256, current)
        if any(link.path.resolve() == parent.resolve() for link in chain):
            raise LineageError(f"{current.name} -> {parent.name}: the recorded chain loops")
        if parent.suffix.lower() in (".pt", ".pth"):
            raise LineageError(f"{artifact.name} does not descend from {reference.name}: its chain ends at "
                               f"checkpoint {parent.name}, whose sha256 differs from {reference.name}'s")
        current, child = parent, current
    raise LineageError(f"{artifact.name}: more than {MAX_DEPTH} recorded parents; refusing to follow further")
