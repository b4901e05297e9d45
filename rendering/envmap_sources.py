"""Where training environment maps come from: users' HDR files and the procedural generators,
mixed by configurable proportions, written as a directory of ``<id>.exr`` plus statistics.

* :class:`EnvmapDirectory` — a directory of .exr/.hdr files (e.g. Laval Indoor or Poly Haven
  downloads, already in the DESIGN.md §3.2 orientation). Each file is validated (InputError names
  it), resampled with the energy-preserving :func:`rendering.envmap.resample_envmap` to the
  working height and cached as ``<sha256 of the file's bytes>-h<height>.npy``: a rerun, or the
  same file under another name, costs one hash. :meth:`EnvmapDirectory.check` loads them all
  first and names every bad file in one error.
* :func:`plan_envmaps` — which envmaps to make: ``n`` procedural maps split among kinds by
  proportions (largest remainder), each with a seed derived from (run seed, kind, index), plus every
  user file. Ids are stable: ``<kind>-<run seed>-<index>`` and ``user-<file stem>``.
* :func:`make_envmaps` — produce them into a directory. Finished ``<id>.exr`` files are skipped,
  every file is written atomically, so an interrupted run resumes where it stopped. Also writes
  ``envmaps.parquet`` / ``envmaps.json`` (one row per map: :func:`envmap_stats`) and
  ``contact_sheet.png`` (previews of the first ``CONTACT_SHEET_MAX`` maps).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fileio.atomic import atomic_write
from rendering.envmap import envmap_power, pixel_directions, pixel_solid_angles, read_envmap, resample_envmap
from rendering.errors import InputError
from rendering.file_hash import file_sha256
from rendering.hdrio import HDR_SUFFIXES, luminance
from rendering.real_envmaps import REAL_KIND, REAL_MAPS, provenance, real_envmap_files

PROCEDURAL_KINDS = ("sky", "studio", "room")  # order fixes the derived seeds: never reorder
ProceduralKind = Literal["sky", "studio", "room"]  # PROCEDURAL_KINDS, as a type
USER_KIND = "user"
FILE_KINDS = (USER_KIND, REAL_KIND)  # envmaps read from files (the others are generated)
TABLE_PARQUET, TABLE_JSON, CONTACT_SHEET = "envmaps.parquet", "envmaps.json", "contact_sheet.png"
CONTACT_SHEET_MAX = 256
SHOWN_PROBLEMS = 3  # bad user files named on the error line; beyond, every one is also a warning
CONTACT_SHEET_COLUMNS = 8
THUMBNAIL_HEIGHT = 32


@dataclass(frozen=True)
class EnvmapParams:
    """The ``envmaps:`` section of params.yaml (field metadata bounds its numbers: pipeline/settings.py)."""

    n: int = field(default=24, metadata={"ge": 0})  # procedural envmaps to make
    seed: int = field(default=0, metadata={"ge": 0})  # run seed; each map's seed derives from it
    # proportions of the procedural kinds (≥ 0, not all 0)
    kinds: dict[ProceduralKind, float] = field(
        default_factory=lambda: {"sky": 0.4, "studio": 0.3, "room": 0.3}, metadata={"ge": 0}
    )
    envmap_height: int = field(default=256, metadata={"ge": 2})  # working height H (maps are H × 2H)
    user_dir: str | None = None  # directory of users' .exr/.hdr files, added to the procedural ones
    real: bool = False  # add the 18 built-in real maps (rendering.real_envmaps), in their fixed splits
    real_cache_dir: str = "data/real_envmaps"  # where the npm package and its decoded maps are kept
    repair: bool = False  # fill NaN/Inf pixels of read maps (else they are an error)
    cache_dir: str = "data/envmap_cache"  # resampled user files, keyed by content hash + height
    room_spp: int = field(default=64, metadata={"ge": 1})  # path-traced samples per pixel of a room envmap

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> EnvmapParams:
        section = dict(params.get("envmaps") or {})
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError("params.yaml", f"envmaps: unknown keys {sorted(unknown)}")
        made = cls(**section)
        check_proportions(made.kinds, "params.yaml envmaps.kinds")
        return made


def check_proportions(kinds: dict[str, float], source: object = "kinds") -> dict[str, float]:
    """Validate {kind: proportion}: known procedural kinds, proportions ≥ 0 and not all 0."""
    unknown = set(kinds) - set(PROCEDURAL_KINDS)
    if unknown:
        raise InputError(source, f"unknown envmap kinds {sorted(unknown)}; choose from {PROCEDURAL_KINDS}")
    if any(not np.isfinite(p) or p < 0 for p in kinds.values()) or sum(kinds.values()) <= 0:
        raise InputError(source, f"proportions must be ≥ 0 and not all 0, got {kinds}")
    return dict(kinds)


def parse_kinds(text: str) -> dict[str, float]:
    """``"sky,room"`` (equal shares) or ``"sky:0.5,room:0.2,studio:0.3"`` → {kind: proportion}."""
    kinds: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, share = item.partition(":")
        try:
            kinds[name.strip()] = float(share) if share else 1.0
        except ValueError:
            raise InputError(f"--kinds {text!r}", f"{share!r} is not a number") from None
    if not kinds:
        raise InputError(f"--kinds {text!r}", "no kind given")
    return check_proportions(kinds, f"--kinds {text!r}")


def allocate(n: int, kinds: dict[str, float]) -> dict[str, int]:
    """Split ``n`` among kinds by proportion (largest remainder; ties by PROCEDURAL_KINDS order)."""
    kinds = check_proportions(kinds)
    total = sum(kinds.values())
    exact = {k: n * p / total for k, p in kinds.items()}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    order = sorted(kinds, key=lambda k: (-(exact[k] - counts[k]), PROCEDURAL_KINDS.index(k)))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


@dataclass(frozen=True)
class EnvmapSpec:
    """One envmap to produce: procedural (kind + seed) or a user file (path)."""

    id: str
    kind: str
    seed: int
    path: str | None = None


def derived_seed(run_seed: int, kind: str, index: int) -> int:
    """The seed of the ``index``-th envmap of ``kind`` in a run with ``run_seed`` (stable, 31 bits)."""
    state = np.random.SeedSequence([run_seed, PROCEDURAL_KINDS.index(kind), index]).generate_state(1)
    return int(state[0] >> 1)


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "envmap"


def plan_envmaps(
    n: int,
    seed: int,
    kinds: dict[str, float],
    user_dir: str | os.PathLike | None = None,
    real_cache_dir: str | os.PathLike | None = None,
) -> list[EnvmapSpec]:
    """The envmaps of a run: procedural ones interleaved by kind, then the built-in real maps
    (when ``real_cache_dir`` is given: fetched and decoded there on first use), then every user file."""
    specs = []
    if n > 0:
        counts = allocate(n, kinds)
        slots = [
            (index / count, PROCEDURAL_KINDS.index(k), k, index)
            for k, count in counts.items()
            for index in range(count)
        ]
        for _, _, kind, index in sorted(slots):
            specs.append(EnvmapSpec(f"{kind}-{seed}-{index:05d}", kind, derived_seed(seed, kind, index)))
    if real_cache_dir is not None:
        files = real_envmap_files(real_cache_dir)
        specs += [EnvmapSpec(f"{REAL_KIND}-{name}", REAL_KIND, 0, str(files[name])) for name in REAL_MAPS]
    if user_dir is not None:
        taken = set()
        for path in list_envmap_files(user_dir):
            name = f"{USER_KIND}-{_safe_id(path.stem)}"
            unique, suffix = name, 1
            while unique in taken:
                suffix += 1
                unique = f"{name}-{suffix}"
            taken.add(unique)
            specs.append(EnvmapSpec(unique, USER_KIND, 0, str(path)))
    return specs


def list_envmap_files(directory: str | os.PathLike) -> list[Path]:
    """The .exr/.hdr files of a directory, sorted by name; other files (a README, .gitkeep) are
    ignored, so an empty directory is simply no files. InputError if it is no directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "is not a directory of .exr/.hdr environment maps")
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in HDR_SUFFIXES)


class EnvmapDirectory:
    """Users' environment maps at the working resolution: ``len()``, ``[i]`` → (H, 2H, 3) float32.

    path: directory of .exr/.hdr files; height: working height H; cache_dir: where resampled maps
    are kept (None: no cache).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        height: int,
        cache_dir: str | os.PathLike | None = None,
        repair: bool = False,  # fill NaN/Inf pixels (rendering.radiance) instead of refusing the file
    ):
        self.repair = repair
        self.path = Path(path)
        self.height = int(height)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.files = list_envmap_files(self.path)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.load(self.files[index])

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Read, validate and resample one file, through the cache."""
        path = Path(path)
        cached = None
        if self.cache_dir is not None:
            cached = self.cache_dir / f"{file_sha256(path)}-h{self.height}.npy"
            if cached.exists():
                envmap = _read_cached(cached, self.height)
                if envmap is not None:
                    return envmap
                warnings.warn(
                    f"{cached}: damaged cache entry (unreadable, or not a finite {self.height}×"
                    f"{2 * self.height} envmap): made again from {path}",
                    stacklevel=2,
                )
        envmap = resample_envmap(read_envmap(path, self.repair), self.height)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(cached, suffix=".npy") as tmp:  # np.save appends .npy to any other name
                np.save(tmp, envmap)
        return envmap

    def check(self) -> None:
        """Load every file (through the cache, so the work serves the run that follows); one
        InputError naming the directory, how many files are bad and the first SHOWN_PROBLEMS with
        their problems (when there are more, each bad file is also one warning before it), so that
        a user fixes them all at once rather than one per run."""
        problems: list[InputError] = []
        for path in self.files:
            try:
                self.load(path)
            except InputError as error:
                problems.append(error)
        if not problems:
            return
        more = ""
        if len(problems) > SHOWN_PROBLEMS:
            for problem in problems:
                warnings.warn(str(problem), stacklevel=2)
            more = f"; and {len(problems) - SHOWN_PROBLEMS} more (all {len(problems)} in the warnings above)"
        shown = "; ".join(f"{Path(p.source).name}: {p.problem}" for p in problems[:SHOWN_PROBLEMS])
        raise InputError(
            self.path,
            f"{len(problems)} of {len(self.files)} environment map files are unusable: {shown}{more}; "
            "fix or remove them and rerun",
        )


def _read_cached(path: Path, height: int) -> np.ndarray | None:
    """A resampled envmap from the cache, or None when the file is not one (truncated, overwritten,
    of another shape, not finite): the entry is then made again rather than trusted."""
    try:
        envmap = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(envmap, np.ndarray):  # an .npz archive
        envmap.close()
        return None
    if envmap.shape != (height, 2 * height, 3) or envmap.dtype != np.float32:
        return None
    return envmap if np.isfinite(envmap).all() and (envmap >= 0).all() else None


def produce_envmap(
    spec: EnvmapSpec,
    height: int,
    directory: EnvmapDirectory | None = None,
    room_spp: int = 64,
    repair: bool = False,
):
    """The (H, 2H, 3) float32 envmap of ``spec``."""
    from rendering.procedural_envmaps import make_envmap

    if spec.kind in FILE_KINDS:
        loader = (
            directory
            if directory is not None
            else EnvmapDirectory(Path(spec.path).parent, height, None, repair)
        )
        return loader.load(spec.path)
    if spec.kind == "room":
        from rendering.procedural_envmaps import make_room

        return make_room(spec.seed, height, spp=room_spp)
    return make_envmap(spec.kind, spec.seed, height)


def envmap_stats(envmap: np.ndarray, spec: EnvmapSpec) -> dict[str, Any]:
    """One table row: id, kind, seed, source, height; dynamic_range = max / median luminance;
    peak luminance; brightest direction (x, y, z); solid-angle-weighted mean colour; power = ∫ Y dω."""
    height = envmap.shape[0]
    lum = luminance(envmap)
    brightest = np.unravel_index(int(np.argmax(lum)), lum.shape)
    direction = pixel_directions(height)[brightest]
    omega = np.broadcast_to(pixel_solid_angles(height)[:, None], lum.shape)
    mean = np.einsum("hwc,hw->c", envmap.astype(np.float64), omega) / omega.sum()
    median = float(np.median(lum))
    return {
        "id": spec.id,
        "kind": spec.kind,
        "seed": spec.seed,
        "source": provenance(spec.id.removeprefix(f"{REAL_KIND}-"))
        if spec.kind == REAL_KIND
        else spec.path or "",
        "license": "CC0-1.0" if spec.kind == REAL_KIND else "",
        "height": int(height),
        "dynamic_range": float(lum.max() / median) if median > 0 else float("inf"),
        "peak": float(lum.max()),
        "brightest_x": float(direction[0]),
        "brightest_y": float(direction[1]),
        "brightest_z": float(direction[2]),
        "mean_r": float(mean[0]),
        "mean_g": float(mean[1]),
        "mean_b": float(mean[2]),
        "power": float(luminance(envmap_power(envmap).astype(np.float32))),
    }


def contact_sheet(envmaps: list[np.ndarray]) -> np.ndarray:
    """uint8 grid of tonemapped thumbnails (each exposed on its own), CONTACT_SHEET_COLUMNS wide."""
    from rendering.hdrio import tonemap

    thumbs = [tonemap(resample_envmap(e, THUMBNAIL_HEIGHT)) for e in envmaps[:CONTACT_SHEET_MAX]]
    columns = min(CONTACT_SHEET_COLUMNS, len(thumbs))
    rows = -(-len(thumbs) // columns)
    gap = 2
    h, w = THUMBNAIL_HEIGHT, 2 * THUMBNAIL_HEIGHT
    sheet = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, 3), 32, dtype=np.uint8)
    for index, thumb in enumerate(thumbs):
        r, c = divmod(index, columns)
        sheet[
            gap + r * (h + gap) : gap + r * (h + gap) + h, gap + c * (w + gap) : gap + c * (w + gap) + w
        ] = thumb
    return sheet


def make_envmaps(
    out_dir: str | os.PathLike,
    n: int,
    seed: int,
    kinds: dict[str, float],
    height: int,
    from_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    room_spp: int = 64,
    progress=None,
) -> list[dict[str, Any]]:
    """Write ``<id>.exr`` for every planned envmap (skipping finished ones), the statistics table
    and the contact sheet into ``out_dir``. Returns the table rows. ``progress(i, total, spec,
    skipped)`` is called after each map."""
    from rendering.hdrio import write_exr, write_png

    out = Path(out_dir)
    specs = plan_envmaps(n, seed, kinds, from_dir)
    if not specs:
        raise InputError(out, "nothing to make: n is 0 and no user envmap files were given")
    directory = EnvmapDirectory(from_dir, height, cache_dir) if from_dir is not None else None
    if directory is not None:
        directory.check()  # every bad file named before anything is written
    out.mkdir(parents=True, exist_ok=True)
    rows, envmaps = [], []
    for index, spec in enumerate(specs):
        target = out / f"{spec.id}.exr"
        skipped = target.exists()
        if skipped:
            envmap = read_envmap(target)
            if envmap.shape[0] != height:
                raise InputError(
                    target, f"exists with height {envmap.shape[0]}, not {height}: use another --out"
                )
        else:
            envmap = produce_envmap(spec, height, directory, room_spp)
            write_exr(target, envmap)
        rows.append(envmap_stats(envmap, spec))
        if len(envmaps) < CONTACT_SHEET_MAX:
            envmaps.append(envmap)
        if progress is not None:
            progress(index + 1, len(specs), spec, skipped)
    changed = _write_table(out, rows)
    if changed or not (out / CONTACT_SHEET).exists():
        write_png(out / CONTACT_SHEET, contact_sheet(envmaps))
    return rows


def _dumps(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1, sort_keys=False, allow_nan=True) + "\n"


def _write_table(out: Path, rows: list[dict[str, Any]]) -> bool:
    """envmaps.json and envmaps.parquet, rewritten only when the rows changed (so a rerun with the
    same arguments touches nothing). Returns whether they were written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = _dumps(rows)
    json_path, parquet_path = out / TABLE_JSON, out / TABLE_PARQUET
    if json_path.exists() and parquet_path.exists() and json_path.read_text() == text:
        return False
    table = pa.table({key: [row[key] for row in rows] for key in rows[0]})
    with atomic_write(parquet_path) as tmp:
        pq.write_table(table, str(tmp))
    with atomic_write(json_path) as tmp:
        tmp.write_text(text)
    return True
