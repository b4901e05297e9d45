"""params.yaml as typed, frozen dataclasses, checked whole before any command touches a file.

One convention for every section: a frozen dataclass whose field *types* say what a value may be
(``int``, ``float``, ``bool``, ``str``, ``X | None``, ``Literal[...]``, ``tuple[X, ...]``,
``dict[K, V]``, a nested dataclass) and whose field *metadata* bound numbers (``ge``, ``gt``,
``le``, ``lt``; on a container they bound every number in it). :func:`from_mapping` turns a
section of params.yaml into its dataclass and rejects, with one line naming the key path, the
value and what is allowed:

- unknown keys (suggesting the closest known one: ``dataset.shard_sizee``),
- wrong types (an int is a number, 6.5 is not an integer, ``true`` is not a number),
- numbers out of range (``total_samples: -100``, ``gamma: 2``, ``measured_fraction: 2``).

:func:`validate_params` applies it to a whole params.yaml: every section, every profile block
(``profiles.<name>``, whose data sections override the top-level ones key by key) and the
few rules that span keys. ``pipeline.config.load_params`` calls it, so every command that reads
params fails before it starts work (exit code 2, ``error: <file>: <key> = <value>: <rule>``).

The sections and their classes (one class per concept; the ones consumers use keep their homes):

==================  ==========================================================================
``render``          :class:`RenderSettings`
``profiles.<name>`` :class:`ProfileSettings` (network sizes: ``models.config.UNetConfig``)
``materials``       :class:`MaterialsSettings`
``envmaps``         ``rendering.envmap_sources.EnvmapParams``
``envmaps_split``   :class:`SplitSettings`
``dataset``         :class:`DatasetSection` → ``pipeline.samples.DatasetSettings`` (content)
``drm``             ``models.config.DRMConfig``
``train_drmnet``    :class:`DRMNetTrainSettings`
``train_obsnet``    :class:`ObsNetTrainSettings` (``diffusion``: ``models.config.DiffusionConfig``)
``estimate``        :class:`EstimateSettings`
``evaluate``        :class:`EvaluateSettings`
``report``          :class:`ReportSettings`
==================  ==========================================================================
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from models.config import DiffusionConfig, DRMConfig, UNetConfig
from pipeline.samples import Augmentation, Split
from rendering.envmap_sources import EnvmapParams
from rendering.errors import InputError
from rendering.shapes import SHAPES
from rendering.spheres import SPHERES

T = TypeVar("T")

Dataset = Literal["drmnet", "obsnet"]
ShapeKind = Literal[SHAPES]  # the built-in shapes
TestSet = Literal["principled", "measured"]
Baseline = Literal["observed_mirror", "completed_mirror", "constant_mean", "oracle"]
SPHERE_METRICS = tuple(
    f"{sphere}_{score}"
    for sphere in SPHERES  # the protocol's three spheres
    for score in ("rmse", "si_rmse", "nrmse", "rel_si_rmse", "angular")
)
OTHER_METRICS = (
    "envmap_log_rmse",
    "refmap_si_rmse",
    "refmap_rel_si_rmse",
    "refmap_log_lum_rmse",
    "material_mae",
    "rerender_nrmse",
)
Metric = Literal[(*SPHERE_METRICS, *OTHER_METRICS)]  # the per-method scores of pipeline/evaluation/scoring.py


def setting(
    default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **bounds: float
) -> Any:
    """A dataclass field with bounds on its numbers: ``ge``, ``gt``, ``le``, ``lt``."""
    unknown = set(bounds) - {"ge", "gt", "le", "lt"}
    if unknown:
        raise TypeError(f"unknown bounds {sorted(unknown)}")
    return field(default=default, default_factory=factory, metadata=bounds)


def embedded(factory: Any) -> Any:
    """A field holding a dataclass whose keys the section writes at its own level (flat), e.g.
    ``evaluate.samples`` for ``EvaluateSettings.estimate.samples``; ``factory`` makes its
    defaults (the keys left out)."""
    return field(default_factory=factory, metadata={"embed": True})


# -- the convention ------------------------------------------------------------------------------


class _Invalid(Exception):
    """A value that does not fit its field; :func:`from_mapping` turns it into one InputError."""

    def __init__(self, where: str, value: Any, rule: str) -> None:
        super().__init__(where, value, rule)
        self.where, self.value, self.rule = where, value, rule


def from_mapping(cls: type[T], mapping: Any, where: str = "", source: object = "params.yaml") -> T:
    """``mapping`` (a section of params.yaml, read at key path ``where``) → an instance of the
    dataclass ``cls``; missing keys take the field defaults. Raises InputError(source, one line)
    for an unknown key, a value of the wrong type or a number out of its field's bounds."""
    try:
        return _dataclass(cls, mapping, where)
    except _Invalid as error:
        raise InputError(
            source, f"{error.where or '(top level)'} = {_show(error.value)}: {error.rule}"
        ) from None


@functools.cache
def _fields(cls: type) -> dict[str, tuple[Any, Mapping[str, float]]]:
    """name → (resolved type, bounds) of the dataclass's init fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.metadata) for f in dataclasses.fields(cls) if f.init}


def _keys(cls: type) -> list[str]:
    """The keys a section of dataclass ``cls`` may hold: its fields, an embedded one's in its place."""
    return [
        key
        for name, (kind, meta) in _fields(cls).items()
        for key in (_keys(kind) if meta.get("embed") else [name])
    ]


def _dataclass(cls: type[T], mapping: Any, where: str) -> T:
    mapping = {} if mapping is None else mapping  # `section:` with nothing under it (YAML null)
    if not isinstance(mapping, Mapping):
        raise _Invalid(where, mapping, f"must be {_describe(cls)}")
    fields = _fields(cls)
    # An embedded dataclass (metadata ``embed``) reads its keys at this level, beside ours.
    embedded = {name: kind for name, (kind, meta) in fields.items() if meta.get("embed")}
    owner = {key: name for name, kind in embedded.items() for key in _fields(kind)}
    known = _keys(cls)
    values: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {name: {} for name in embedded}
    for key, value in mapping.items():
        path = f"{where}.{key}" if where else str(key)
        if key in owner:
            kind, bounds = _fields(embedded[owner[key]])[key]
            parts[owner[key]][key] = _convert(kind, value, path, bounds)
        elif key in fields and key not in embedded:
            kind, bounds = fields[key]
            values[key] = _convert(kind, value, path, bounds)
        else:
            raise _Invalid(path, value, f"unknown key ({_hint(key, known)})")
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    for name, part in parts.items():
        if part:
            values[name] = dataclasses.replace(defaults[name].default_factory(), **part)
    return cls(**values)


def _hint(key: Any, known: typing.Iterable[str]) -> str:
    """'did you mean 'shard_size'?' for a misspelt key, else the known keys."""
    known = list(known)
    close = difflib.get_close_matches(str(key), known, n=1)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"


def _convert(kind: Any, value: Any, where: str, bounds: Mapping[str, float]) -> Any:
    """``value`` as ``kind``, or _Invalid naming what ``kind`` (with ``bounds``) allows."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if dataclasses.is_dataclass(kind):
        return _dataclass(kind, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _convert(arm, value, where, bounds)
            except _Invalid as error:
                if error.where != where:  # a problem inside the value (a nested key): name it
                    raise
        raise _Invalid(where, value, f"must be {_describe(kind, bounds)}")
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _Invalid(where, value, f"must be {_describe(kind, bounds)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Invalid(where, value, f"must be {_describe(kind, bounds)}")
        fixed = origin is tuple and (len(args) != 2 or args[1] is not Ellipsis)
        if fixed and len(value) != len(args):
            raise _Invalid(where, value, f"must be {_describe(kind, bounds)}")
        items = args if fixed else [args[0]] * len(value)
        converted = [
            _convert(a, v, f"{where}[{i}]", bounds) for i, (a, v) in enumerate(zip(items, value, strict=True))
        ]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        value = {} if value is None else value  # `key:` with nothing under it (YAML null)
        if not isinstance(value, Mapping):
            raise _Invalid(where, value, f"must be {_describe(kind, bounds)}")
        key_kind, value_kind = args
        known = typing.get_args(key_kind) if typing.get_origin(key_kind) is Literal else None
        for k, v in value.items():
            if known is not None and k not in known:
                raise _Invalid(f"{where}.{k}", v, f"unknown key ({_hint(k, known)})")
            if not isinstance(k, str):
                raise _Invalid(f"{where}.{k}", v, "keys must be strings")
        return {k: _convert(value_kind, v, f"{where}.{k}", bounds) for k, v in value.items()}
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _bounded(value, where, kind, bounds)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(_bounded(value, where, kind, bounds))
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{where}: no rule for fields of type {kind!r}")
    raise _Invalid(where, value, f"must be {_describe(kind, bounds)}")


def _bounded(number: float, where: str, kind: type, bounds: Mapping[str, float]) -> Any:
    inside = (
        number >= bounds.get("ge", -math.inf)
        and number > bounds.get("gt", -math.inf)
        and number <= bounds.get("le", math.inf)
        and number < bounds.get("lt", math.inf)
    )
    if not inside:
        raise _Invalid(where, number, f"must be {_describe(kind, bounds)}")
    return number


def _describe(kind: Any, bounds: Mapping[str, float] = {}) -> str:
    """What ``kind`` with ``bounds`` allows, in words: 'an integer >= 1', 'a number in [0, 1]'."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return f"a mapping with keys {', '.join(_keys(kind))}"
    if origin in (typing.Union, types.UnionType):
        arms = [_describe(a, bounds) for a in args if a is not type(None)]
        return " or ".join(arms) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            return f"a list of {len(args)} {_plural(args[0], bounds)}"
        return f"a list of {_plural(args[0], bounds)}"
    if origin is dict:
        keys = "" if args[0] is str else f" ({', '.join(typing.get_args(args[0]))})"
        return f"a mapping{keys} of {_plural(args[1], bounds)}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(kind, repr(kind)) + _range(bounds)


def _plural(kind: Any, bounds: Mapping[str, float]) -> str:
    """'integers >= 1', 'numbers in [0, 1]', …: the items of a container."""
    words = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
    if kind in words:
        return words[kind] + _range(bounds)
    return _describe(kind, bounds)


def _range(bounds: Mapping[str, float]) -> str:
    def show(number: float) -> str:
        return f"{number:g}"

    low = ("ge", "[") if "ge" in bounds else ("gt", "(") if "gt" in bounds else None
    high = ("le", "]") if "le" in bounds else ("lt", ")") if "lt" in bounds else None
    if low and high:
        return f" in {low[1]}{show(bounds[low[0]])}, {show(bounds[high[0]])}{high[1]}"
    if low:
        return f" {'>=' if low[0] == 'ge' else '>'} {show(bounds[low[0]])}"
    if high:
        return f" {'<=' if high[0] == 'le' else '<'} {show(bounds[high[0]])}"
    return ""


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else "null" if value is None else str(value)
    if isinstance(value, bool):
        text = str(value).lower()
    return text if len(text) <= 60 else text[:57] + "..."


# -- the sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderSettings:
    """The ``render`` section."""

    variant: Literal["auto", "cuda_ad_rgb", "llvm_ad_rgb", "scalar_rgb"] = (
        "auto"  # env DRMNET_VARIANT overrides
    )


@dataclass(frozen=True)
class MaterialsSettings:
    """The ``materials`` section: measured BRDFs (rendering/builtin_materials.py)."""

    merl_dir: str | None = None  # the user's MERL .binary files (None: none)
    builtin: int | None = setting(None, ge=0)  # how many built-in measured-like materials (None: all)
    cache_dir: str | None = "data/materials"  # tabulated built-in tables and fitted z


@dataclass(frozen=True)
class SplitSettings:
    """The ``envmaps_split`` section (pipeline/splits.py)."""

    seed: int = setting(0, ge=0)  # shuffles the envmaps before they are cut into splits
    proportions: dict[Split, float] = setting(factory=lambda: {"train": 0.64, "val": 0.16, "test": 0.2}, ge=0)


@dataclass(frozen=True)
class DatasetSection:
    """The ``dataset`` section as written. What a sample's content depends on is
    ``pipeline.samples.DatasetSettings`` (made from this, the profile and ``drm``/``materials``)."""

    seed: int = setting(0, ge=0)  # every per-sample seed derives from this
    refmap_res: int | None = setting(None, ge=4)  # overrides the profile's refmap_res
    spp: int | None = setting(None, ge=1)  # overrides the profile's spp
    shard_size: int = setting(64, ge=1)  # samples per shard
    samples: dict[Dataset, dict[Split, int]] = setting(factory=dict, ge=0)  # dataset → split → count
    envmap_block: int = setting(1, ge=1)  # consecutive samples sharing one envmap draw
    real_fraction: dict[Split, float] = setting(factory=dict, ge=0, le=1)  # share of blocks on file maps
    augmentation: Augmentation = field(default_factory=Augmentation)  # file maps' flip, tilt, exposure, tint
    view_azimuth_deg: tuple[float, float] = (-180.0, 180.0)  # uniform view azimuth range
    object_res: int = setting(64, ge=4)  # object images: pixels per side
    object_spp: int | None = setting(None, ge=1)  # object images: samples per pixel (None: the profile's spp)
    shapes: tuple[ShapeKind, ...] = ("ellipsoid", "superquadric", "blob")  # procedural kinds of the pools
    shape_pool: dict[Split, int] = setting(factory=dict, ge=0)  # procedural shapes per split
    mesh_dirs: dict[Split, str | None] = field(default_factory=dict)  # the user's meshes per split
    measured_fraction: dict[Split, float] = setting(factory=dict, ge=0, le=1)  # share of measured BRDFs
    runner: Literal["threads", "processes", "dask"] = "threads"
    workers: int = setting(1, ge=1)  # threads / processes / local Dask workers
    dask_address: str | None = None  # a Dask scheduler (implies runner: dask)


@dataclass(frozen=True)
class TrainSettings:
    """What ``train_drmnet`` and ``train_obsnet`` share (the training loop's keyword arguments and
    the shard reader's); the loop's defaults apply to keys left out."""

    section: ClassVar[str]  # its section of params.yaml (and key of the profile's overrides)

    total_samples: int = setting(40_000, ge=1)  # training length in samples, all ranks together
    batch_size: int = setting(20, ge=1)  # samples per optimisation step, all ranks together
    lr: float = setting(5e-5, gt=0)  # AdamW learning rate after warm-up
    weight_decay: float = setting(0.01, ge=0)  # AdamW decoupled weight decay
    warmup_samples: int = setting(100_000, ge=0)  # linear LR warm-up
    lr_decay_samples: int = setting(0, ge=0)  # cosine LR decay to lr_min over the last this many samples
    lr_min: float = setting(0.0, ge=0)  # learning rate at the end of the decay
    init_from: str | None = None  # start from this model directory's weights (fine-tuning), same network
    ema_halflife_samples: float = setting(10_000, gt=0)  # EMA of the weights
    ema_rampup: float | None = setting(0.05, gt=0)  # early on, EMA half-life <= this × samples seen
    grad_clip: float = setting(1.0, ge=0)  # max gradient norm (0: off)
    mixed_precision: bool = True  # bf16 autocast, on GPUs only
    seed: int = setting(0, ge=0)  # initial weights and training noise
    tick_samples: int = setting(2_000, ge=1)  # status line + loss-curve row every this many samples
    snapshot_ticks: int = setting(10, ge=1)  # checkpoint every this many ticks (and at the end)
    keep_snapshots: bool = False  # also keep every snapshot's EMA weights (checkpoints/<net>/snapshots/)
    preview_ticks: int = setting(10, ge=0)  # sample grid to MLflow every this many ticks (0: never)
    stop_at_samples: int | None = setting(None, ge=1)  # end this invocation early, checkpointed
    num_workers: int = setting(2, ge=0)  # shard-reader worker processes
    shuffle_buffer: int = setting(1000, ge=0)  # samples in each reader worker's shuffle buffer
    # The keys as written (the profile's merged in) with their values as read from YAML, an integer
    # still an integer: what a run's fingerprint and MLflow params record (pipeline/training/stage.py),
    # so that they, and the checkpoints that hold them, stay those of the untyped settings.
    as_written: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @classmethod
    def from_params(cls: type[T], params: Mapping[str, Any], profile: str | None = None) -> T:
        """The section with the profile's block of it merged in key by key (``diffusion`` one
        level deeper), checked."""
        from pipeline.config import profile_params

        section = dict(params.get(cls.section) or {})
        overrides = dict(profile_params(dict(params), profile).get(cls.section) or {})
        if isinstance(overrides.get("diffusion"), dict):
            overrides["diffusion"] = {**(section.get("diffusion") or {}), **overrides["diffusion"]}
        written = {**section, **overrides}
        settings = from_mapping(cls, written, cls.section)
        object.__setattr__(settings, "as_written", written)  # frozen, and no key of the section
        return settings


@dataclass(frozen=True)
class DRMNetTrainSettings(TrainSettings):
    """The ``train_drmnet`` section."""

    section: ClassVar[str] = "train_drmnet"
    teacher_forcing: float = setting(0.5, ge=0, le=1)  # fraction of training where IllNet sees the true z_k
    # IllNet's error measured in log10(x + this) of the normalised refmap (models/drm.py dark_weights):
    # 0.1 is the plain L2 in the networks' domain T; smaller weighs the dark regions more.
    loss_offset: float = setting(0.1, gt=0, le=0.1)
    # The networks this run trains; one left out keeps init_from's weights (required then). With
    # teacher forcing the two learn independently, so RefNet alone retrains at a fraction of the
    # cost (a network whose size differs from init_from's starts from fresh weights).
    networks: tuple[Literal["illnet", "refnet"], ...] = ("illnet", "refnet")


@dataclass(frozen=True)
class ObsNetTrainSettings(TrainSettings):
    """The ``train_obsnet`` section."""

    section: ClassVar[str] = "train_obsnet"
    lr: float = setting(1e-4, gt=0)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


@dataclass(frozen=True)
class ProfileSettings:
    """A block of ``profiles``: refmap resolution, sample counts, network sizes, and overrides of
    the data sections (key by key) and of the training sections."""

    refmap_res: int | None = setting(None, ge=4)  # refmap resolution R
    spp: int | None = setting(None, ge=1)  # samples per pixel of the dataset's refmaps
    illnet: UNetConfig | None = None
    refnet: UNetConfig | None = None
    obsnet: UNetConfig | None = None
    train_drmnet: DRMNetTrainSettings | None = None
    train_obsnet: ObsNetTrainSettings | None = None
    envmaps: EnvmapParams | None = None
    envmaps_split: SplitSettings | None = None
    dataset: DatasetSection | None = None


@dataclass(frozen=True)
class EstimateSettings:
    """The ``estimate`` section (pipeline/estimate.py)."""

    samples: int = setting(4, ge=1)  # N stochastic samples per image, run in one batch
    seed: int = setting(0, ge=0)  # the samples' noise; the same seed gives the same samples
    max_steps: int | None = setting(None, ge=1)  # DRM steps at most (None: the model's own, 150 in the paper)
    # ObsNet's DDIM steps (None: the model's own diffusion.sampling_steps, 50 in the paper)
    sampling_steps: int | None = setting(None, ge=1)
    envmap_height: int = setting(64, ge=2)  # height H of the envmaps written (H, 2H)
    sphere_res: int = setting(64, ge=1)  # side of the material-sphere previews
    sphere_spp: int = setting(64, ge=1)  # samples per pixel of the material-sphere renders
    erode: int = setting(1, ge=0)  # 3×3 erosions of the object mask's boundary before binning

    @classmethod
    def from_params(cls, section: Mapping[str, Any] | None) -> EstimateSettings:
        return from_mapping(cls, section or {}, "estimate")


@dataclass(frozen=True)
class EvaluateSettings:
    """The ``evaluate`` section (pipeline/flows/evaluate.py). The estimation run on every test
    sample is an :class:`EstimateSettings` whose keys the section writes flat (``samples``,
    ``seed``, ``envmap_height``, …)."""

    model: str = "models:/drmnet@candidate"  # the DRMNet evaluated: URI or checkpoint directory
    obsnet: str | None = "models:/obsnet@candidate"  # ObsNet: URI, checkpoint directory or None
    dataset: Dataset = "drmnet"  # shards under <shards>/<dataset>/test/
    shards: str = "data/shards"
    envmaps: str = "data/envmaps"
    test_sets: tuple[TestSet, ...] = ("principled", "measured")
    items: int = setting(8, ge=0)  # test samples per test set (0: all)
    # N samples per test sample, their seed (also the protocol renders'), the DRM / DDIM steps,
    # the estimated envmaps' height (32 here), the protocol spheres' pixels and samples per pixel
    estimate: EstimateSettings = embedded(lambda: EstimateSettings(envmap_height=32))
    rerender_spp: int = setting(64, ge=1)
    baselines: tuple[Baseline, ...] = ("observed_mirror", "completed_mirror", "constant_mean", "oracle")
    primary_metric: Metric = "mirror_rel_si_rmse"  # decides the champion: lower is better
    primary_test_set: str = "principled/real"  # a summary group; falls back to its test set
    gallery: int = setting(2, ge=0)  # samples per test set with images for the report
    relight_material: tuple[float, float, float, float, float, float] = setting(
        (1.0, 0.95, 0.64, 0.54, 0.25, 0.5), ge=0, le=1
    )  # copper-ish, for the gallery
    relight_res: int = setting(64, ge=1)
    relight_spp: int = setting(32, ge=1)
    measured_materials: int = setting(3, ge=0)  # built-in measured BRDFs in the rendered measured test set
    object_res: int = setting(64, ge=4)  # object images of the rendered measured test set
    object_spp: int = setting(64, ge=1)

    @classmethod
    def from_params(cls, section: Mapping[str, Any] | None) -> EvaluateSettings:
        return from_mapping(cls, section or {}, "evaluate")


@dataclass(frozen=True)
class ReportSettings:
    """The ``report`` section (pipeline/report.py)."""

    eval_dir: str = "eval"  # what `evaluate` wrote
    out_dir: str = "reports"  # report.html + report.md + images/ + curves/
    plots_dir: str = "plots"  # train_<net>.csv of the training stages: the loss curves


@dataclass(frozen=True)
class Params:
    """A whole params.yaml; every section may be left out (its defaults apply)."""

    profile: str = "tiny"  # the block of `profiles` in use
    render: RenderSettings = field(default_factory=RenderSettings)
    profiles: dict[str, ProfileSettings] = field(default_factory=dict)
    materials: MaterialsSettings = field(default_factory=MaterialsSettings)
    envmaps: EnvmapParams = field(default_factory=EnvmapParams)
    envmaps_split: SplitSettings = field(default_factory=SplitSettings)
    dataset: DatasetSection = field(default_factory=DatasetSection)
    drm: DRMConfig = field(default_factory=DRMConfig)
    train_drmnet: DRMNetTrainSettings = field(default_factory=DRMNetTrainSettings)
    train_obsnet: ObsNetTrainSettings = field(default_factory=ObsNetTrainSettings)
    estimate: EstimateSettings = field(default_factory=EstimateSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    report: ReportSettings = field(default_factory=ReportSettings)


DATA_SECTION_CLASSES = {"envmaps": EnvmapParams, "envmaps_split": SplitSettings, "dataset": DatasetSection}


def validate_params(params: Mapping[str, Any], source: object = "params.yaml") -> Params:
    """Check a whole params.yaml (already parsed) and return it typed; raises InputError(source,
    one line) at the first problem. Checks every profile, and the data sections as each profile
    merges them, not only the selected one: a profile that cannot run is an error whichever is
    selected."""
    from pipeline.config import with_profile

    typed = from_mapping(Params, params, "", source)
    if typed.profiles and typed.profile not in typed.profiles:
        raise InputError(
            source, f"profile = {_show(typed.profile)}: must be one of {', '.join(typed.profiles)}"
        )
    for name in typed.profiles or [None]:
        merged = with_profile(dict(params), name)
        where = "" if name is None else f"profiles.{name}."
        sections = {
            section: from_mapping(cls, merged.get(section) or {}, f"{where}{section}", source)
            for section, cls in DATA_SECTION_CLASSES.items()
        }
        if sum(sections["envmaps"].kinds.values()) <= 0:
            raise InputError(
                source, f"{where}envmaps.kinds = {_show(sections['envmaps'].kinds)}: must not all be 0"
            )
        proportions = sections["envmaps_split"].proportions
        if sum(proportions.values()) <= 0:
            raise InputError(
                source, f"{where}envmaps_split.proportions = {_show(proportions)}: must not all be 0"
            )
    return typed
