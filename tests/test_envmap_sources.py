"""Environment-map sources: procedural skies, studios and rooms; users' directories (validated,
resampled, cached); mixing by proportions; the make-envmaps command and its idempotent reruns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rendering.envmap import (
    envmap_power,
    footprint_uv,
    pixel_directions,
    pixel_solid_angles,
    read_envmap,
    uv_to_direction,
)
from rendering.envmap_sources import (
    EnvmapDirectory,
    allocate,
    derived_seed,
    make_envmaps,
    parse_kinds,
    plan_envmaps,
)
from rendering.errors import InputError
from rendering.hdrio import luminance, write_exr
from rendering.objects import columns
from rendering.procedural_envmaps import (
    ROOM_MAX_DEPTH,
    make_envmap,
    make_room,
    make_room_description,
    sky_components,
)


@pytest.mark.parametrize("kind, height", [("sky", 16), ("studio", 16), ("room", 8)])
def test_procedural_envmaps_are_seeded_finite_hdr(kind, height):
    envmap = make_envmap(kind, 3, height)
    assert envmap.shape == (height, 2 * height, 3) and envmap.dtype == np.float32
    assert np.isfinite(envmap).all() and envmap.min() >= 0 and envmap.max() > 0
    np.testing.assert_array_equal(envmap, make_envmap(kind, 3, height))
    assert not np.allclose(envmap, make_envmap(kind, 4, height))


def test_clear_sky_has_its_sun_where_asked_with_real_dynamic_range():
    elevation, azimuth = np.radians(35.0), 1.0
    sky = sky_components(0, 64, turbidity=3.0, sun_elevation=elevation, sun_azimuth=azimuth, cloud_cover=0.0)
    envmap = sky.envmap()
    lum = luminance(envmap)
    brightest = pixel_directions(64)[np.unravel_index(np.argmax(lum), lum.shape)]
    sun = np.array(
        [np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)]
    )
    assert np.degrees(np.arccos(brightest @ sun)) < 3.0  # within a pixel or two (2.8° pixels)
    upper = pixel_directions(64)[..., 1] > 0
    ratio = luminance(sky.sun_radiance) / luminance(sky.background)[upper].mean()
    assert 1e4 <= ratio <= 1e5
    # The disc deposits its exact power at any resolution (area-weighted, never point-sampled).
    sun_power = [envmap_power(sky_components(0, h, 3.0, elevation, azimuth, 0.0).envmap()) for h in (16, 64)]
    np.testing.assert_allclose(sun_power[0], sun_power[1], rtol=0.01)
    # A clear day: blue at the zenith, brighter toward the horizon and around the sun (Perez).
    zenith = envmap[0].mean(axis=0)
    assert zenith[2] > zenith[0]
    away = -sun * np.array([1, 0, 1]) / np.linalg.norm(sun * np.array([1, 0, 1]))
    near_sun, opposite = (
        _look_up(envmap, (sun + np.array([0.0, 0.25, 0.0]))),
        _look_up(envmap, away + [0, 0.3, 0]),
    )
    assert luminance(near_sun) > 2 * luminance(opposite)


def _look_up(envmap: np.ndarray, direction) -> np.ndarray:
    from rendering.envmap import direction_to_uv

    direction = np.asarray(direction, float) / np.linalg.norm(direction)
    u, v = direction_to_uv(direction)
    height = envmap.shape[0]
    return envmap[min(int(v * height), height - 1), min(int(u * 2 * height), 2 * height - 1)]


def test_studio_lights_stand_out_from_a_dark_backdrop():
    for seed in range(3):
        lum = luminance(make_envmap("studio", seed, 32))
        assert lum.max() / np.median(lum) > 50


def test_room_path_tracer_agrees_with_mitsubas_own():
    # The portal-sampling tracer is a variance reduction, not an approximation: on average it
    # gives what Mitsuba's stock path integrator gives for the same room (sky as an envmap
    # emitter, sun as a directional emitter), here for a room with a window.
    from rendering.variant import ensure_variant

    mi = ensure_variant()
    seed = next(s for s in range(20) if make_room_description(s).windows)
    room = make_room_description(seed)
    height, spp = 4, 1024
    ours = make_room(seed, height, spp=256)
    scene = dict(room.scene)
    scene["sky"] = {"type": "envmap", "bitmap": mi.Bitmap(room.sky.background)}
    scene["sun"] = {
        "type": "directional",
        "direction": (-room.sky.sun_direction).tolist(),
        "irradiance": {"type": "rgb", "value": (room.sky.sun_radiance * room.sky.sun_solid_angle).tolist()},
    }
    integrator = mi.load_dict({"type": "path", "max_depth": ROOM_MAX_DEPTH})
    sampler = mi.load_dict({"type": "independent"})
    n = height * 2 * height
    sampler.seed(11, n * spp)
    pixels = np.repeat(np.arange(n), spp)
    rows, cols = np.divmod(pixels, 2 * height)
    jitter = np.random.default_rng(0).random((n * spp, 2))
    directions = uv_to_direction(*footprint_uv(rows, cols, jitter, height))
    ray = mi.Ray3f(mi.Point3f(*room.viewpoint.tolist()), mi.Vector3f(*directions.T.astype(np.float32)))
    loaded = mi.load_dict(scene)  # keep it alive until the lazy result is read
    radiance, _, _ = integrator.sample(loaded, sampler, mi.RayDifferential3f(ray))
    stock = columns(radiance).reshape(height, 2 * height, spp, 3).mean(axis=2)
    # (Ours also adds the sun disc where a window shows it, which the stock render cannot hit: at
    # this resolution it is < 1% of a pixel's value.)
    weights = pixel_solid_angles(height)[:, None]
    ours_y, stock_y = (float((luminance(e) * weights).sum()) for e in (ours, stock))
    assert abs(ours_y / stock_y - 1) < 0.05


def test_kinds_are_mixed_by_proportion():
    assert allocate(10, {"sky": 0.5, "studio": 0.3, "room": 0.2}) == {"sky": 5, "studio": 3, "room": 2}
    counts = allocate(7, {"sky": 1, "studio": 1, "room": 1})
    assert sum(counts.values()) == 7 and max(counts.values()) - min(counts.values()) <= 1
    assert allocate(4, {"sky": 1.0, "room": 0.0}) == {"sky": 4, "room": 0}
    plan = plan_envmaps(10, 7, {"sky": 0.5, "studio": 0.3, "room": 0.2})
    assert [s.id for s in plan] == [
        s.id for s in plan_envmaps(10, 7, {"sky": 0.5, "studio": 0.3, "room": 0.2})
    ]
    assert len({s.id for s in plan}) == 10 and len({s.seed for s in plan}) == 10
    assert {k: sum(s.kind == k for s in plan) for k in ("sky", "studio", "room")} == {
        "sky": 5,
        "studio": 3,
        "room": 2,
    }
    assert derived_seed(7, "sky", 0) != derived_seed(8, "sky", 0)
    assert parse_kinds("sky,room") == {"sky": 1.0, "room": 1.0}
    assert parse_kinds("sky:0.7, studio:0.3") == {"sky": 0.7, "studio": 0.3}
    for bad, message in (
        ("sky,moon", "unknown envmap kinds"),
        ("sky:x", "not a number"),
        ("sky:0", "not all 0"),
    ):
        with pytest.raises(InputError, match=message):
            parse_kinds(bad)


def _user_dir(tmp_path, rng):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_exr(folder / "hall.exr", (rng.random((16, 32, 3)) * 10).astype(np.float32))
    from rendering.variant import ensure_variant

    ensure_variant().Bitmap((rng.random((8, 16, 3)) + 0.1).astype(np.float32)).write(str(folder / "yard.hdr"))
    (folder / "README.txt").write_text("not an envmap\n")
    return folder


def test_user_directory_is_validated_resampled_and_cached(tmp_path, rng):
    folder = _user_dir(tmp_path, rng)
    cache = tmp_path / "cache"
    maps = EnvmapDirectory(folder, 4, cache)
    assert len(maps) == 2 and [p.name for p in maps.files] == ["hall.exr", "yard.hdr"]
    hall = maps[0]
    assert hall.shape == (4, 8, 3)
    np.testing.assert_allclose(envmap_power(hall), envmap_power(read_envmap(folder / "hall.exr")), rtol=1e-5)
    cached = sorted(cache.glob("*-h4.npy"))
    assert len(cached) == 1
    # A rerun reads the cache instead of redoing the work (proof: it returns what the cache holds).
    np.save(cached[0], hall * 2)
    np.testing.assert_array_equal(EnvmapDirectory(folder, 4, cache)[0], hall * 2)
    # Another height is another cache entry; changed content is another key.
    EnvmapDirectory(folder, 2, cache)[0]
    write_exr(folder / "hall.exr", np.ones((16, 32, 3), np.float32))
    np.testing.assert_allclose(EnvmapDirectory(folder, 4, cache)[0], 1.0, rtol=1e-6)
    assert len(list(cache.glob("*.npy"))) == 3


def test_bad_user_files_are_named(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / ".gitkeep").touch()
    assert len(EnvmapDirectory(folder, 4)) == 0  # an empty directory is no files, not an error
    with pytest.raises(InputError, match="is not a directory"):
        EnvmapDirectory(tmp_path / "nowhere", 4)
    nan = np.ones((8, 16, 3), np.float32)
    nan[2, 3] = np.nan
    write_exr(folder / "broken.exr", nan)
    with pytest.raises(InputError, match="broken.exr: has 3 NaN"):
        EnvmapDirectory(folder, 4)[0]
    write_exr(folder / "broken.exr", np.ones((8, 8, 3), np.float32))
    with pytest.raises(InputError, match="broken.exr: .*twice as wide"):
        EnvmapDirectory(folder, 4)[0]


def _directory_with_bad_files(tmp_path, rng):
    """A user directory with a truncated .exr, a map of the wrong aspect and a good one."""
    folder = tmp_path / "mine"
    write_exr(folder / "cut.exr", (rng.random((16, 32, 3)) + 0.1).astype(np.float32))
    data = (folder / "cut.exr").read_bytes()
    (folder / "cut.exr").write_bytes(data[: len(data) // 2])
    write_exr(folder / "square.exr", np.ones((8, 8, 3), np.float32))
    write_exr(folder / "good.exr", (rng.random((8, 16, 3)) + 0.1).astype(np.float32))
    return folder


def test_every_bad_user_file_is_named_in_one_error_before_anything_is_written(tmp_path, rng):
    from pipeline.splits import make_envmap_splits

    folder = _directory_with_bad_files(tmp_path, rng)
    params = {
        "profile": "tiny",
        "profiles": {"tiny": {}},
        "envmaps": {
            "n": 2,
            "kinds": {"sky": 1.0},
            "envmap_height": 8,
            "user_dir": str(folder),
            "cache_dir": str(tmp_path / "c"),
        },
    }
    runs = {
        "make-envmap-splits": lambda out: make_envmap_splits(params, out),
        "make-envmaps": lambda out: make_envmaps(out, 2, 0, {"sky": 1.0}, 8, from_dir=folder),
    }
    for name, run in runs.items():
        out = tmp_path / name
        with pytest.raises(InputError) as raised:
            run(out)
        message = str(raised.value)
        assert message.startswith(f"{folder}: 2 of 3 environment map files are unusable: cut.exr: ")
        assert "cut.exr: unreadable or truncated" in message
        assert "; square.exr: an equirectangular environment map must be twice as wide" in message
        assert (
            "good.exr" not in message
            and "\n" not in message
            and message.endswith("fix or remove them and rerun")
        )
        assert not out.exists(), f"{name} wrote before it had checked every file"


def test_many_bad_user_files_are_one_error_line_and_one_warning_each(tmp_path, rng, monkeypatch, capsys):
    """The error names the count and the first three files with their problems; every bad file is
    a one-line warning before it (the full list), rather than an error of many lines."""
    from tiny_workspace import run_cli

    folder = _directory_with_bad_files(tmp_path, rng)
    for index in range(3):
        (folder / f"empty{index}.hdr").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning) as warned:
        code, output = run_cli(
            ["make-envmaps", "--n", "0", "--from-dir", folder, "--out", "out"], monkeypatch, capsys
        )
    assert code == 2 and output.count("\n") == 1, output
    assert output.startswith(f"error: {folder}: 5 of 6 environment map files are unusable: cut.exr: ")
    assert "; empty0.hdr: " in output and "; empty1.hdr: " in output and "empty2.hdr" not in output
    assert "; and 2 more (all 5 in the warnings above); fix or remove them and rerun" in output
    named = sorted(Path(str(w.message).split(": ")[0]).name for w in warned if str(folder) in str(w.message))
    assert named == ["cut.exr", "empty0.hdr", "empty1.hdr", "empty2.hdr", "square.exr"]
    assert not (tmp_path / "out").exists()


def test_a_damaged_cache_entry_is_made_again_with_a_warning(tmp_path, rng, monkeypatch, capsys):
    """A cached resampled user map that is truncated, not an array or of another shape used to end
    in a traceback; it is made again from the user's file, the same bytes as before."""
    from tiny_workspace import run_cli

    folder = _user_dir(tmp_path, rng)
    monkeypatch.chdir(tmp_path)
    make = ["make-envmaps", "--n", "0", "--from-dir", folder, "--cache-dir", "cache", "--envmap-height", "4"]
    code, output = run_cli([*make, "--out", "first"], monkeypatch, capsys)
    assert code == 0, output
    entries = sorted((tmp_path / "cache").glob("*.npy"))
    good = {entry.name: entry.read_bytes() for entry in entries}
    assert len(entries) == 2
    entries[0].write_bytes(good[entries[0].name][:100])  # truncated
    np.save(entries[1], np.zeros((3, 3), np.float32))  # another shape
    with pytest.warns(UserWarning, match="damaged cache entry .* made again from") as warned:
        code, output = run_cli([*make, "--out", "second"], monkeypatch, capsys)
    assert code == 0, output
    damaged = [str(w.message) for w in warned if "damaged cache entry" in str(w.message)]
    assert sorted(Path(message.split(": ")[0]).name for message in damaged) == sorted(good)
    assert {entry.name: entry.read_bytes() for entry in entries} == good
    for name in ("hall", "yard"):
        assert (tmp_path / "second" / f"user-{name}.exr").read_bytes() == (
            tmp_path / "first" / f"user-{name}.exr"
        ).read_bytes()


def test_make_envmaps_writes_maps_table_and_sheet_and_reruns_idempotently(tmp_path, rng):
    folder = _user_dir(tmp_path, rng)
    out = tmp_path / "envmaps"
    kinds = {"sky": 1.0, "studio": 1.0, "room": 1.0}
    rows = make_envmaps(out, 3, 0, kinds, 8, from_dir=folder, cache_dir=tmp_path / "cache", room_spp=4)
    ids = [row["id"] for row in rows]
    assert sorted(p.stem for p in out.glob("*.exr")) == sorted(ids) and len(ids) == 5
    assert {row["kind"] for row in rows} == {"sky", "studio", "room", "user"}
    import pyarrow.parquet as pq

    table = pq.read_table(out / "envmaps.parquet")
    assert table.column("id").to_pylist() == ids
    for column in ("kind", "seed", "dynamic_range", "brightest_x", "mean_r", "power"):
        assert column in table.column_names
    assert json.loads((out / "envmaps.json").read_text()) == rows
    assert (out / "contact_sheet.png").stat().st_size > 0
    sky = next(row for row in rows if row["kind"] == "sky")
    np.testing.assert_array_equal(read_envmap(out / f"{sky['id']}.exr"), make_envmap("sky", sky["seed"], 8))

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = make_envmaps(out, 3, 0, kinds, 8, from_dir=folder, cache_dir=tmp_path / "cache", room_spp=4)
    assert again == rows
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing rewritten
    room = next(row["id"] for row in rows if row["kind"] == "room")
    before = read_envmap(out / f"{room}.exr")
    (out / f"{room}.exr").unlink()  # as if the run had been killed before writing it
    make_envmaps(out, 3, 0, kinds, 8, from_dir=folder, cache_dir=tmp_path / "cache", room_spp=4)
    np.testing.assert_array_equal(read_envmap(out / f"{room}.exr"), before)
    assert not list(out.glob(".*.exr")), "no temporary file may be left behind"


def test_make_envmaps_command(tmp_path):
    from typer.testing import CliRunner

    import pipeline.cli  # noqa: F401  (registers the commands)
    from pipeline.cli.app import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        ["make-envmaps", "--n", "2", "--kinds", "sky,studio", "--envmap-height", "8", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*.exr"))) == 2 and (tmp_path / "envmaps.parquet").exists()
    result = runner.invoke(app, ["make-envmaps", "--n", "2", "--kinds", "sky,lava", "--out", str(tmp_path)])
    assert isinstance(result.exception, InputError) and "lava" in str(result.exception)


def test_room_is_the_same_whatever_ran_before_in_the_process():
    # Same seed → same bytes, also within one process after other renders (Prefect flows, users'
    # scripts, this test suite). Rooms with 2–3 lamps: in Mitsuba 3.9.1 the order of a scene's
    # emitters changes from one load of the same dict to the next (about 1 load in 5 for these
    # seeds), and lamp sampling in that order gave a different noise pattern each time.
    from rendering.objects import ObjectRenderer
    from rendering.refmap import render_refmaps

    seeds = (2, 6, 25, 47)
    first = {seed: make_room(seed, 2, spp=2) for seed in seeds}
    material = np.full(6, 0.5)
    for repeat in range(3):
        render_refmaps(make_envmap("sky", repeat, 8), material[None], refmap_res=8, spp=4)
        ObjectRenderer({"type": "sphere"}, object_res=8).render(
            make_envmap("studio", repeat, 8), material, spp=4
        )
        for seed in seeds:
            assert make_room(seed, 2, spp=2).tobytes() == first[seed].tobytes(), (seed, repeat)


def test_room_envmaps_are_the_same_bytes_in_two_fresh_processes(tmp_path):
    """A fresh clone's `make demo` must reproduce the envmaps its dvc.lock records, so the rooms
    (the kind Mitsuba's per-load scene order could change) come out byte-identical from two
    separate `drmnet make-envmaps` processes: every file it writes (rooms with 1 to 3 lamps)."""
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    processes = {}
    for run in ("first", "second"):  # at once: two fresh processes either way
        args = [
            "make-envmaps",
            "--n",
            "4",
            "--kinds",
            "room",
            "--envmap-height",
            "4",
            "--room-spp",
            "2",
            "--out",
            run,
        ]
        command = [sys.executable, "-c", "from pipeline.cli import main; main()", *args]
        processes[run] = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    made = []
    for run, process in processes.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        made.append({path.name: path.read_bytes() for path in sorted((tmp_path / run).iterdir())})
    assert len([name for name in made[0] if name.startswith("room-")]) == 4
    assert made[0] == made[1]
