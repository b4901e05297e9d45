"""What a training/evaluation sample holds and how one is made (DESIGN.md §3.4).

Every random choice of sample ``index`` of (dataset, split) comes from a generator seeded by
(``dataset.seed``, dataset, split, index): a sample — and so a shard — is a pure function of
the params and its index, whatever runner or worker renders it.

``drmnet`` sample (one ``render_refmaps`` call, one seed: common random numbers, so L_k and
L_{k−1} differ only by the material step, not by Monte Carlo noise):

- ``refmap_obs`` (3, R, R) L_K, the observation (material ``z_obs`` = z_K; it is also L_{K−1}),
- ``refmap_k`` L_k, ``refmap_next`` L_{k−1}, ``refmap_mirror`` L_0 under the mirror z0,
- ``z_obs``, ``z_k``, ``z_next`` (6,) float32; meta ``k``, ``K``, ``view_azimuth`` (radians),
  ``envmap_id``, ``material_source``.

k is uniform in [1, K−1], so that z_{k−1} is a step of the schedule. K = 1 (‖z_K − z0‖ < εγ:
the observation is already a mirror, and the sampler stops before any IllNet step) has no such
pair; there k = 0 and z_next = z0 + γ·Δ_K, the schedule's formula one step further (a
near-zero residual). With z ~ U[0, 1]^6 this happens with probability ~1e−13.

``obsnet`` sample: ``refmap_obs`` (the full L_K), and from an object image of a shape of the
split's pool under the same envmap, material and view: ``observed`` (3, R, R) the sparse observed
refmap (0 where unobserved) and ``observed_mask`` (1, R, R) float32 in {0, 1}; plus ``z_obs``, the
meta fields above and the object's ``shape`` (built-in kind or mesh file name), ``shape_seed``
(the built-in shape's seed; 0 for a mesh) and ``shape_sha256`` (the mesh file's; "" otherwise).

Shape pools: each split draws its objects from a pool of its own (:func:`shape_pools`), as the
paper keeps separate shape sets: ``dataset.shape_pool[split]`` procedural shapes whose seeds
derive from (``dataset.seed``, split, member index) and carry the split in their two lowest bits
(so no two splits can share one), cycling through the non-sphere kinds of ``dataset.shapes``,
plus the OBJ/PLY files of ``dataset.mesh_dirs[split]`` (an empty directory: none), identified by
content hash (a file in two splits is an InputError). The sphere, if listed, is one shape: each
pool then holds it once, shared by every split (it is exempt from the disjointness check, and left
out by default).

Materials: z ~ U[0, 1]^6, except that in splits with ``measured_fraction`` > 0 that fraction of
observations uses a measured BRDF (the ``materials`` section: the built-in measured-like tables
and the user's MERL files). Then L_K is rendered with the measured BSDF, ``z_obs`` is its
closest principled material (``fit_principled``: the target RefNet should reach), the schedule
and L_k, L_{k−1}, L_0 follow from that z with the same seed, and ``material_source`` names the
BRDF (``"uniform"`` otherwise).

Envmap blocks and batching: consecutive samples ``[b·B, (b+1)·B)`` (``B = dataset.envmap_block``)
share one envmap draw — the envmap and, for file maps, its flip and tilt — so that a shard renders
them in ONE render call (:func:`make_samples`): their refmaps are rendered side by side, each with
its own seed, and each is bit-identical to rendering that sample alone, so a sample stays a pure
function of (params, index) whatever the batch. Blocks use the split's envmaps in turn through a
seeded permutation; with ``dataset.real_fraction[split]`` = f the share f of blocks (exactly:
block b is a file-map block iff ⌊(b+1)f⌋ > ⌊bf⌋) use the file maps (built-in real maps and the
user's, ids ``real-…`` / ``user-…``), the rest the procedural ones, each group in turn.

Augmentation of file maps (``dataset.augmentation``, splits listed there, train by default; all
recorded per sample in the manifest): per block, a horizontal flip (u → 1 − u) with probability
``flip`` and an elevation tilt uniform in ±``tilt_deg`` (the map rotated about the camera's x axis);
per sample, an exposure 2^U(±``exposure_stops``) and a white-balance tint exp(U(±``tint``)) per
channel normalised to unit luminance. Exposure and tint multiply the rendered images: rendering
is linear in each channel of the envmap, so that is exact, and samples of a block still share
their render call. The azimuth rotation is the view's (``view_azimuth_deg``).

Test samples (split ``test``) of both datasets also keep what evaluation needs: the object
``image`` (H, W, 3) float32, ``normals`` (H, W, 3) float32, ``mask`` (H, W) uint8 (and the
``shape`` fields), and ``refmap_mirror``; the envmap itself is ``<envmaps>/test/<envmap_id>.exr``.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rendering.errors import InputError
from rendering.hdrio import luminance

DATASETS = ("drmnet", "obsnet")
SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]  # SPLITS, as a type
EVAL_SPLIT = "test"  # samples of this split carry the object image, normals, mask and mirror
DEFAULT_SHAPE_POOL = {"train": 64, "val": 16, "test": 20}  # the paper's 3200/800/1000, scaled down


@dataclass(frozen=True)
class DatasetSettings:
    """The ``dataset`` section of params.yaml plus the profile's resolution and spp: everything a
    sample's content depends on (the runner settings are not here: they never change bytes)."""

    seed: int = 0  # every per-sample seed derives from this
    refmap_res: int = 32  # refmap resolution R (from the profile)
    spp: int = 64  # samples per pixel (from the profile)
    shard_size: int = 64  # samples per shard
    samples: dict[str, dict[str, int]] = field(default_factory=dict)  # dataset → split → count
    view_azimuth_deg: tuple[float, float] = (-180.0, 180.0)  # uniform view azimuth range
    object_res: int = 64  # object image side (pixels)
    object_spp: int = 64  # object image samples per pixel
    shapes: tuple[str, ...] = ("ellipsoid", "superquadric", "blob")  # procedural kinds of the shape pools
    shape_pool: dict[str, int] = field(default_factory=DEFAULT_SHAPE_POOL.copy)  # split → procedural shapes
    mesh_dirs: dict[str, str | None] = field(default_factory=dict)  # split → the user's OBJ/PLY directory
    drm: dict[str, Any] = field(default_factory=dict)  # the DRM constants (params.yaml ``drm``)
    measured_fraction: dict[str, float] = field(default_factory=dict)  # split → share of measured BRDFs
    materials: dict[str, Any] = field(default_factory=dict)  # where they come from (params ``materials``)
    envmap_block: int = 1  # consecutive samples that share one envmap draw (one render call)
    real_fraction: dict[str, float] = field(default_factory=dict)  # split → share of blocks on file maps
    augmentation: dict[str, Any] = field(default_factory=dict)  # file maps' augmentation (Augmentation)

    def count(self, dataset: str, split: str) -> int:
        try:
            return int(self.samples[dataset][split])
        except KeyError:
            raise InputError("params.yaml", f"dataset.samples.{dataset}.{split} is not set") from None

    def fingerprint(self) -> dict[str, Any]:
        """Plain data identifying the content (stored in shard records); with user meshes, their
        content hashes too (an edited mesh file changes the samples, not the params)."""
        # refmap_res is stored as ``res``, its name when the first shards were written: the
        # records of existing shards stay valid.
        data = {("res" if key == "refmap_res" else key): value for key, value in asdict(self).items()}
        if any(self.mesh_dirs.values()):
            data["meshes"] = {
                split: [[Path(m.name).name, m.sha256] for m in pool if m.sha256]
                for split, pool in shape_pools(self).items()
            }
        return data


def settings_from_params(params: dict[str, Any], profile: str | None = None) -> DatasetSettings:
    """params.yaml (``dataset`` section checked by pipeline/settings.py, the selected profile,
    ``drm``, ``materials``) → DatasetSettings."""
    from pipeline.config import profile_params, with_profile
    from pipeline.settings import DatasetSection, from_mapping

    params = with_profile(params, profile)
    section = dict(params.get("dataset") or {})
    written = from_mapping(DatasetSection, section, "dataset")
    chosen = profile_params(params, profile)
    missing = [key for key in ("refmap_res", "spp") if key not in chosen]
    if missing:
        raise InputError("params.yaml", f"profiles.{chosen['name']} lacks {missing}")
    return DatasetSettings(
        seed=written.seed,
        refmap_res=int(chosen["refmap_res"] if written.refmap_res is None else written.refmap_res),
        spp=int(chosen["spp"] if written.spp is None else written.spp),
        shard_size=written.shard_size,
        samples=written.samples,
        view_azimuth_deg=written.view_azimuth_deg,
        object_res=written.object_res,
        object_spp=int(chosen["spp"] if written.object_spp is None else written.object_spp),
        shapes=written.shapes,
        shape_pool={**DEFAULT_SHAPE_POOL, **written.shape_pool},
        mesh_dirs=written.mesh_dirs,
        drm=dict(params.get("drm") or {}),
        measured_fraction=written.measured_fraction,
        materials=dict(params.get("materials") or {}),
        envmap_block=written.envmap_block,
        real_fraction=written.real_fraction,
        augmentation=dict(section.get("augmentation") or {}),  # as written: part of the shards' fingerprint
    )


def _stable(text: str) -> int:
    """A process-independent integer for a string (``hash`` is salted per process)."""
    return zlib.crc32(text.encode())


def sample_rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index``'s random choices (independent of every other sample)."""
    sequence = np.random.SeedSequence(seed, spawn_key=(_stable(dataset), _stable(split), index))
    return np.random.default_rng(sequence)


@dataclass(frozen=True)
class PoolShape:
    """A member of a split's shape pool: a built-in shape and its seed, or a user's mesh file."""

    name: str  # a built-in kind (rendering.shapes.SHAPES) or the mesh file's path
    seed: int = 0  # the built-in shape's seed (0 for a mesh)
    sha256: str = ""  # the mesh file's content hash ("" for a built-in shape)

    @property
    def identity(self) -> tuple:
        """What makes two members the same shape: (kind, seed), or the mesh's content."""
        return ("mesh", self.sha256) if self.sha256 else (self.name, self.seed)


def shape_pools(settings: DatasetSettings) -> dict[str, tuple[PoolShape, ...]]:
    """split → its shape pool (see the module docstring); disjoint across splits except for the
    shared sphere. Raises InputError for an unknown kind, a bad mesh directory, an empty pool or
    a mesh file found twice (naming both paths). Cheap: procedural members are cached, mesh
    files hashed once per version."""
    from rendering.shapes import SHAPES

    unknown = sorted(set(settings.shapes) - set(SHAPES))
    if unknown:
        raise InputError("params.yaml", f"dataset.shapes: unknown shapes {unknown}; choose from {SHAPES}")
    for split in (*settings.shape_pool, *settings.mesh_dirs):
        if split not in SPLITS:
            raise InputError("params.yaml", f"dataset.shape_pool / mesh_dirs: unknown split {split!r}")
    solids = [kind for kind in settings.shapes if kind != "sphere"]
    pools: dict[str, tuple[PoolShape, ...]] = {}
    for split in SPLITS:
        members = [PoolShape("sphere")] if "sphere" in settings.shapes else []
        if solids:
            members += _procedural_pool(
                settings.seed, split, tuple(solids), settings.shape_pool.get(split, 0)
            )
        if settings.mesh_dirs.get(split):
            members += _mesh_members(Path(settings.mesh_dirs[split]), split)
        if not members:
            raise InputError(
                "params.yaml",
                f"the {split} split has no shapes: dataset.shape_pool.{split} is 0 (or dataset.shapes "
                f"is empty) and dataset.mesh_dirs.{split} is unset or holds no .obj/.ply files",
            )
        pools[split] = tuple(members)
    _check_disjoint(pools)
    return pools


@functools.lru_cache(maxsize=64)
def _procedural_pool(seed: int, split: str, kinds: tuple[str, ...], size: int) -> tuple[PoolShape, ...]:
    """The procedural members of ``split``'s pool, cycling through ``kinds``; cached, since every
    sample plan looks its pool up."""
    return tuple(
        PoolShape(kinds[index % len(kinds)], _pool_seed(seed, split, index)) for index in range(size)
    )


def _pool_seed(seed: int, split: str, index: int) -> int:
    """The seed of procedural member ``index`` of ``split``'s pool, in [0, 2^31): a 29-bit offset
    drawn from (seed, split), plus the index, above two bits holding the split's number. Distinct
    by construction: within a split by the index, across splits by the low bits."""
    sequence = np.random.SeedSequence(seed, spawn_key=(_stable("shape_pool"), _stable(split)))
    offset = int(sequence.generate_state(1)[0])
    return ((offset + index) % 2**29) << 2 | SPLITS.index(split)


def _mesh_members(directory: Path, split: str) -> list[PoolShape]:
    from rendering.shapes import MESH_SUFFIXES

    if not directory.is_dir():
        raise InputError(directory, f"dataset.mesh_dirs.{split}: not a directory")
    # Other files (a README, .gitkeep) are ignored: an empty directory adds no shapes.
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    return [PoolShape(str(path), 0, _mesh_sha256(str(path), *_version(path))) for path in files]


def _version(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4096)
def _mesh_sha256(path: str, size: int, mtime_ns: int) -> str:
    """A mesh file's sha256, cached per (path, size, mtime): every sample plan looks it up."""
    from rendering.file_hash import file_sha256

    return file_sha256(path)


def _check_disjoint(pools: dict[str, tuple[PoolShape, ...]]) -> None:
    """No shape in two places (the shared sphere aside): a mesh file twice is the user's
    InputError; two procedural members alike would be a bug in :func:`_pool_seed`."""
    seen: dict[tuple, tuple[str, PoolShape]] = {}
    for split, pool in pools.items():
        for member in pool:
            if member.name == "sphere":
                continue
            if member.identity in seen:
                other_split, other = seen[member.identity]
                if member.sha256:
                    raise InputError(
                        member.name,
                        f"the same mesh (sha256 {member.sha256[:12]}…) is also {other.name} "
                        f"({other_split} split): a shape must be in one split only",
                    )
                raise AssertionError(f"shape pools overlap: {member} in {other_split} and {split}")
            seen[member.identity] = (split, member)


FILE_ENVMAP_PREFIXES = ("real-", "user-")  # ids of envmaps read from files (rendering.envmap_sources)


def is_file_envmap(envmap_id: str) -> bool:
    """Whether an envmap id names a real or user map (as opposed to a procedural one)."""
    return str(envmap_id).startswith(FILE_ENVMAP_PREFIXES)


@dataclass(frozen=True)
class Augmentation:
    """The ``dataset.augmentation`` section: how file maps are varied (module docstring); field
    metadata bounds the numbers (pipeline/settings.py)."""

    splits: tuple[Split, ...] = ("train",)  # splits whose file maps are augmented
    # probability of a horizontal flip, per block
    flip: float = field(default=0.0, metadata={"ge": 0, "le": 1})
    tilt_deg: float = field(default=0.0, metadata={"ge": 0})  # elevation tilt uniform in ±this, per block
    exposure_stops: float = field(default=0.0, metadata={"ge": 0})  # exposure 2^U(±this), per sample
    # per-channel gain exp(U(±this)), normalised to unit luminance, per sample
    tint: float = field(default=0.0, metadata={"ge": 0})

    @classmethod
    def from_dict(cls, section: dict[str, Any]) -> Augmentation:
        from pipeline.settings import from_mapping

        return from_mapping(cls, section, "dataset.augmentation")

    def applies(self, split: str, envmap_id: str) -> bool:
        return split in self.splits and is_file_envmap(envmap_id)


@dataclass(frozen=True)
class EnvmapDraw:
    """The envmap of a block: which map, and its flip and tilt (radians)."""

    envmap_id: str
    flip: bool = False
    tilt: float = 0.0


def draw_envmap(settings: DatasetSettings, split: str, index: int, envmap_ids: list[str]) -> EnvmapDraw:
    """The envmap draw of the block that holds sample ``index`` (module docstring)."""
    block = index // max(1, settings.envmap_block)
    files = [i for i in envmap_ids if is_file_envmap(i)]
    generated = [i for i in envmap_ids if not is_file_envmap(i)]
    fraction = settings.real_fraction.get(split)
    if fraction is None or not files or not generated:
        pool, position, order_key = list(envmap_ids), block, (_stable(split),)
    else:
        before = int(np.floor(block * fraction))
        on_files = int(np.floor((block + 1) * fraction)) > before
        pool, position = (files, before) if on_files else (generated, block - before)
        order_key = (_stable(split), _stable("files" if on_files else "generated"))
    order = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=order_key)).permutation(
        len(pool)
    )
    envmap_id = pool[int(order[position % len(pool)])]
    augmentation = Augmentation.from_dict(settings.augmentation)
    if not augmentation.applies(split, envmap_id):
        return EnvmapDraw(envmap_id)
    rng = np.random.default_rng(
        np.random.SeedSequence(settings.seed, spawn_key=(_stable("block"), _stable(split), block))
    )
    flip = bool(rng.random() < augmentation.flip)
    tilt = float(np.radians(rng.uniform(-augmentation.tilt_deg, augmentation.tilt_deg)))
    return EnvmapDraw(envmap_id, flip, tilt)


def augmented_envmap(envmap: np.ndarray, draw: EnvmapDraw) -> np.ndarray:
    """The envmap a block renders under: flipped and tilted as ``draw`` says."""
    from rendering.envmap import tilt_envmap

    if draw.flip:
        envmap = np.ascontiguousarray(envmap[:, ::-1])
    if draw.tilt:
        envmap = tilt_envmap(envmap, draw.tilt)
    return envmap


@dataclass(frozen=True)
class SamplePlan:
    """Every random choice of one sample, drawn before anything is rendered."""

    dataset: str
    split: str
    index: int
    envmap_id: str
    z_obs: np.ndarray  # (6,) float32, z_K
    k: int
    K: int
    z_k: np.ndarray  # (6,) float32
    z_next: np.ndarray  # (6,) float32, z_{k−1}
    view_azimuth: float  # radians
    render_seed: int  # Mitsuba seed (uint32)
    shape: str  # the object: a built-in kind or a mesh file's path (rendering.shapes.make_shape)
    shape_seed: int
    material_source: str = "uniform"
    shape_sha256: str = ""  # the mesh file's content hash ("" for a built-in shape)
    flip: bool = False  # the block's envmap augmentation (EnvmapDraw)
    tilt: float = 0.0
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # exposure × tint, multiplies the rendered images

    @property
    def envmap_draw(self) -> EnvmapDraw:
        return EnvmapDraw(self.envmap_id, self.flip, self.tilt)


def schedule_pair(
    z_obs: np.ndarray, rng: np.random.Generator, drm: dict[str, Any]
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(k, K, z_k, z_{k−1}) for an observed material z_K (6,), by models.drm's schedule.

    k uniform in [1, K−1]; K = 1 gives k = 0 and z_{−1} (see the module docstring).
    """
    import torch

    from models.config import DRMConfig
    from models.drm import material_at, schedule_length

    config = DRMConfig.from_dict(drm)
    z_K = torch.from_numpy(np.asarray(z_obs, dtype=np.float64)[None])
    K = int(schedule_length(z_K, config)[0])
    k = int(rng.integers(1, K)) if K >= 2 else 0
    steps = torch.tensor([k, k - 1])
    z = material_at(z_K.expand(2, 6), steps, torch.tensor([K, K]), config).numpy().astype(np.float32)
    return k, K, z[0], z[1]


def plan_sample(
    settings: DatasetSettings, dataset: str, split: str, index: int, envmap_ids: list[str]
) -> SamplePlan:
    """Draw the random choices of sample ``index`` (a pure function of its arguments).

    Envmaps are drawn per block (:func:`draw_envmap`): in turn through a seeded permutation, so
    every envmap of a group appears equally often (up to one block); the object's shape is drawn
    uniformly from the split's pool.
    """
    if dataset not in DATASETS:
        raise InputError("dataset", f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    if split not in SPLITS:
        raise InputError("split", f"unknown split {split!r}; choose one of {SPLITS}")
    if not envmap_ids:
        raise InputError(f"envmaps/{split}", "the split has no environment maps")
    draw = draw_envmap(settings, split, index, envmap_ids)
    rng = sample_rng(settings.seed, dataset, split, index)
    z_obs = rng.random(6).astype(np.float32)  # z ~ U[0, 1]^6, rounded to what is stored
    material_source = "uniform"
    if rng.random() < settings.measured_fraction.get(split, 0.0):
        names = sorted(measured_brdfs(settings))
        material_source = names[int(rng.integers(len(names)))]
        z_obs = fitted_z(settings, material_source)
    k, K, z_k, z_next = schedule_pair(z_obs, rng, settings.drm)
    low, high = np.radians(settings.view_azimuth_deg)
    view_azimuth = float(rng.uniform(low, high))
    render_seed = int(rng.integers(0, 2**31))
    pool = shape_pools(settings)[split]
    shape = pool[int(rng.integers(len(pool)))]
    gain = (1.0, 1.0, 1.0)
    augmentation = Augmentation.from_dict(settings.augmentation)
    if augmentation.applies(split, draw.envmap_id):
        exposure = 2.0 ** rng.uniform(-augmentation.exposure_stops, augmentation.exposure_stops)
        tint = np.exp(rng.uniform(-augmentation.tint, augmentation.tint, 3))
        tint /= float(luminance(tint, dtype=np.float64))
        gain = tuple(float(g) for g in exposure * tint)
    return SamplePlan(
        dataset=dataset,
        split=split,
        index=index,
        envmap_id=draw.envmap_id,
        z_obs=z_obs,
        k=k,
        K=K,
        z_k=z_k,
        z_next=z_next,
        view_azimuth=view_azimuth,
        render_seed=render_seed,
        shape=shape.name,
        shape_seed=shape.seed,
        material_source=material_source,
        shape_sha256=shape.sha256,
        flip=draw.flip,
        tilt=draw.tilt,
        gain=gain,
    )


def make_sample(plan: SamplePlan, envmap: np.ndarray, settings: DatasetSettings) -> dict[str, Any]:
    """Render the sample ``plan`` describes under ``envmap`` (H, 2H, 3, before the plan's flip and
    tilt); see the module docstring for the fields."""
    return make_samples([plan], augmented_envmap(envmap, plan.envmap_draw), settings)[0]


def make_samples(
    plans: list[SamplePlan], envmap: np.ndarray, settings: DatasetSettings
) -> list[dict[str, Any]]:
    """Render samples that share one (already augmented) envmap (H, 2H, 3): all their principled
    refmaps in ONE render call, each with its sample's seed (bit-identical to one call per
    sample). Arrays are float32 (mask uint8); scalars go to the sample's metadata."""
    from rendering.principled import MIRROR
    from rendering.refmap import render_refmaps

    stacks, azimuths, seeds = [], [], []
    for plan in plans:
        if plan.dataset == "drmnet":
            materials = np.stack([plan.z_obs, plan.z_k, plan.z_next, MIRROR])
        else:
            materials = np.stack([plan.z_obs, MIRROR]) if plan.split == EVAL_SPLIT else plan.z_obs[None]
        stacks.append(materials)
        azimuths.append(np.full(len(materials), plan.view_azimuth))
        seeds.append(np.full(len(materials), plan.render_seed, dtype=np.int64))
    rendered = render_refmaps(
        envmap,
        np.concatenate(stacks),
        np.concatenate(azimuths),
        settings.refmap_res,
        settings.spp,
        np.concatenate(seeds),
    )
    offsets = np.cumsum([0] + [len(m) for m in stacks])
    return [
        _finish_sample(plan, rendered[offsets[i] : offsets[i + 1]], envmap, settings)
        for i, plan in enumerate(plans)
    ]


def _finish_sample(
    plan: SamplePlan, refmaps: np.ndarray, envmap: np.ndarray, settings: DatasetSettings
) -> dict[str, Any]:
    """One sample from its principled refmaps: the measured observation and the object image where
    the plan has them, the exposure/tint gain applied to every image."""
    evaluation = plan.split == EVAL_SPLIT
    sample: dict[str, Any] = {
        "z_obs": plan.z_obs,
        "K": plan.K,
        "view_azimuth": plan.view_azimuth,
        "envmap_id": plan.envmap_id,
        "material_source": plan.material_source,
    }
    if plan.flip or plan.tilt or plan.gain != (1.0, 1.0, 1.0):
        sample.update(aug_flip=plan.flip, aug_tilt=plan.tilt, aug_gain=list(plan.gain))
    refmaps = refmaps.copy()
    bsdf = None
    if plan.material_source != "uniform":
        from rendering.measured_bsdf import measured_bsdf
        from rendering.refmap import render_refmaps_bsdf

        bsdf = measured_bsdf(measured_brdfs(settings)[plan.material_source], proxy_z=plan.z_obs)
        # Same sampling code and seed as the principled refmaps: common random numbers again.
        refmaps[0] = render_refmaps_bsdf(
            envmap, bsdf, np.array([plan.view_azimuth]), settings.refmap_res, settings.spp, plan.render_seed
        )[0]
    gain = np.asarray(plan.gain, dtype=np.float32)
    refmaps *= gain[None, :, None, None]
    sample["refmap_obs"] = refmaps[0]
    if plan.dataset == "drmnet":
        sample.update(refmap_k=refmaps[1], refmap_next=refmaps[2], refmap_mirror=refmaps[3])
        sample.update(z_k=plan.z_k, z_next=plan.z_next, k=plan.k)
    elif evaluation:
        sample["refmap_mirror"] = refmaps[1]
    if plan.dataset == "obsnet" or evaluation:
        material = plan.z_obs if bsdf is None else bsdf
        observation = _object_observation(plan, envmap, material, settings, keep_image=evaluation)
        observation["observed"] = observation["observed"] * gain[:, None, None]
        if "image" in observation:
            observation["image"] = observation["image"] * gain
        sample.update(observation)
    return sample


def _object_observation(
    plan: SamplePlan, envmap: np.ndarray, material, settings: DatasetSettings, keep_image: bool
) -> dict[str, np.ndarray]:
    """Render the plan's shape with the sample's material, envmap and view; bin it into a refmap."""
    from rendering.objects import render_object
    from rendering.observation import image_to_refmap
    from rendering.shapes import make_shape

    shape = make_shape(plan.shape, plan.shape_seed)
    rendered = render_object(
        envmap,
        shape,
        material,
        object_res=settings.object_res,
        spp=settings.object_spp,
        seed=plan.render_seed,
        view_azimuth=plan.view_azimuth,
    )
    mask = np.asarray(rendered.mask, dtype=bool)
    observed, observed_bins = image_to_refmap(rendered.image, rendered.normals, mask, settings.refmap_res)
    out = {
        "observed": observed,
        "observed_mask": observed_bins[None].astype(np.float32),
        "shape": Path(plan.shape).name if plan.shape_sha256 else plan.shape,
        "shape_seed": plan.shape_seed,
        "shape_sha256": plan.shape_sha256,
    }
    if keep_image:
        out.update(image=rendered.image, normals=rendered.normals, mask=mask.astype(np.uint8))
    return out


def _materials_key(settings: DatasetSettings) -> tuple:
    section = settings.materials
    return section.get("merl_dir"), section.get("builtin"), section.get("cache_dir")


@functools.lru_cache(maxsize=4)
def _load_measured(merl_dir: str | None, builtin: int | None, cache_dir: str | None) -> dict:
    from rendering.builtin_materials import measured_materials

    materials = measured_materials(merl_dir, builtin, cache_dir)
    if not materials:
        raise InputError("params.yaml", "dataset.measured_fraction > 0 but the materials section yields none")
    return materials


def measured_brdfs(settings: DatasetSettings) -> dict:
    """The measured BRDFs (name → MerlBrdf) of the ``materials`` section, loaded once per process."""
    return _load_measured(*_materials_key(settings))


@functools.lru_cache(maxsize=256)
def _fit(key: tuple, name: str) -> np.ndarray:
    from rendering.principled_fit import fit_principled

    return np.clip(fit_principled(_load_measured(*key)[name], cache_dir=key[2]), 0.0, 1.0).astype(np.float32)


def fitted_z(settings: DatasetSettings, name: str) -> np.ndarray:
    """The closest principled material (6,) float32 of the measured BRDF ``name`` (cached)."""
    return _fit(_materials_key(settings), name).copy()


def measured_digest(settings: DatasetSettings) -> dict[str, str]:
    """name → sha256 of each measured table (for shard fingerprints); {} when none is used."""
    import hashlib

    if not any(f > 0 for f in settings.measured_fraction.values()):
        return {}
    return {
        name: hashlib.sha256(np.ascontiguousarray(brdf.filled).tobytes()).hexdigest()
        for name, brdf in sorted(measured_brdfs(settings).items())
    }
