"""Object shapes: built-in procedural shapes and user meshes, as Mitsuba 3 shapes that fit the view.

Every shape is normalised to the unit bounding sphere centred at the origin, which the object
cameras of :mod:`rendering.objects` frame with a small margin.

Built-in shapes (``make_shape(name, seed)``, deterministic by seed, randomly oriented):

``sphere``        Mitsuba's analytic unit sphere (exact normals: the reference object).
``ellipsoid``     semi-axes drawn from [0.45, 1].
``superquadric``  Barr's superellipsoid, exponents in [0.35, 1.6] (boxy to pinched), axes in [0.6, 1].
``blob``          a sphere displaced by 3–8 Gaussian bumps and dents (non-convex: interreflections).

The procedural meshes are star-shaped: an icosphere (no seams, near-uniform vertices) whose
vertices are moved along their direction ``d`` to the surface radius ``r(d)``; smooth vertex
normals are area-weighted face normals, accumulated in numpy (:func:`smooth_vertex_normals`):
Mitsuba's own ``recompute_vertex_normals`` sums with parallel atomic adds, whose order — and so
the last bits of every normal and of every image rendered with them — changes from run to run.

User meshes (``load_mesh(path)``, or ``make_shape(path)``): OBJ or PLY loaded by Mitsuba's
``obj``/``ply`` plugins, centred on their bounding box and scaled so that the farthest vertex is at
distance 1. Normals the file holds are kept; a file without any gets :func:`smooth_vertex_normals`
too, not the normals Mitsuba's loader would compute (racy, as above), so that renders of a user
mesh are reproducible to the bit as well. A mesh file is named by its content
(:func:`rendering.file_hash.file_sha256`).

Winding: the renderer shades the side a face's normal points to, and normals computed from the
faces follow their winding, so a closed mesh wound inside-out would show its normals away from the
camera (and render black). A closed mesh (every edge shared by two faces, vertices welded by
position) whose signed volume is negative is turned outward on loading, and vertex normals of the
file that point into the object at ``INWARD_NORMALS`` of its vertices or more are flipped too; one
warning names the file. An open mesh has no inside: its winding is kept as the file gives it.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from rendering.errors import InputError
from rendering.variant import ensure_variant

SHAPES = ("sphere", "ellipsoid", "superquadric", "blob")
MESH_SUFFIXES = {".obj": "obj", ".ply": "ply"}
DEFAULT_SUBDIVISIONS = 5  # icosphere level: 10 242 vertices, 20 480 triangles
INWARD_NORMALS = 0.9  # share of a file's vertex normals pointing into the object that flips them
_OBJ_NORMAL = re.compile(rb"[ \t]*vn[ \t]")  # an OBJ vertex-normal line


def icosphere(subdivisions: int = DEFAULT_SUBDIVISIONS) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: vertices (V, 3) float64 on the sphere and faces (F, 3) int (CCW from outside)."""
    phi = (1.0 + np.sqrt(5.0)) / 2.0
    vertices = np.array(
        [[-1, phi, 0], [1, phi, 0], [-1, -phi, 0], [1, -phi, 0], [0, -1, phi], [0, 1, phi],
         [0, -1, -phi], [0, 1, -phi], [phi, 0, -1], [phi, 0, 1], [-phi, 0, -1], [-phi, 0, 1]],
        dtype=np.float64,
    )  # fmt: skip
    faces = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        dtype=np.int64,
    )  # fmt: skip
    vertices /= np.linalg.norm(vertices, axis=1, keepdims=True)
    for _ in range(subdivisions):
        # One new vertex per unique edge, then every triangle splits into four.
        edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        unique, inverse = np.unique(np.sort(edges, axis=1), axis=0, return_inverse=True)
        midpoints = vertices[unique].mean(axis=1)
        midpoints /= np.linalg.norm(midpoints, axis=1, keepdims=True)
        mid = inverse.reshape(3, -1).T + len(vertices)  # (F, 3): midpoints of edges 01, 12, 20
        vertices = np.concatenate([vertices, midpoints])
        a, b, c = faces.T
        ab, bc, ca = mid.T
        faces = np.concatenate(
            [np.stack(f, axis=1) for f in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))]
        )
    return vertices, faces


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed rotation matrix (3, 3) (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def superquadric_radius(directions: np.ndarray, axes, e1: float, e2: float) -> np.ndarray:
    """Distance (N,) from the origin to Barr's superellipsoid along unit directions (N, 3).

    f(p) = (|x/a|^(2/e2) + |z/c|^(2/e2))^(e2/e1) + |y/b|^(2/e1) = 1 is homogeneous of degree 2/e1,
    so the surface point along d is r·d with r = f(d)^(−e1/2). e1 = e2 = 1 is an ellipsoid.
    """
    a, b, c = axes
    d = np.abs(directions) + 1e-12
    horizontal = (d[:, 0] / a) ** (2 / e2) + (d[:, 2] / c) ** (2 / e2)
    f = horizontal ** (e2 / e1) + (d[:, 1] / b) ** (2 / e1)
    return f ** (-e1 / 2)


def blob_radius(directions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Radius (N,) of a sphere with 3–8 Gaussian bumps/dents at random places (non-convex)."""
    radius = np.ones(len(directions))
    for _ in range(int(rng.integers(3, 9))):
        centre = rng.normal(size=3)
        centre /= np.linalg.norm(centre)
        width = rng.uniform(0.25, 0.7)
        height = rng.uniform(-0.3, 0.4)
        radius += height * np.exp((directions @ centre - 1.0) / width**2)
    return np.maximum(radius, 0.35)


def smooth_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals (V, 3) float32: the area-weighted sum of the adjacent faces' normals,
    accumulated in a fixed order so the result is bit-for-bit reproducible."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    face_normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2·area
    normals = np.zeros_like(v)
    for corner in range(3):
        np.add.at(normals, f[:, corner], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.where(length > 0, length, 1.0)).astype(np.float32)


def mesh_from_arrays(name: str, vertices: np.ndarray, faces: np.ndarray, bsdf=None, normals=None):
    """A Mitsuba triangle mesh from vertices (V, 3) and faces (F, 3); vertex normals are given or
    computed (:func:`smooth_vertex_normals`). ``bsdf`` (a loaded Mitsuba BSDF) is attached when given."""
    if normals is None:
        normals = smooth_vertex_normals(vertices, faces)
    mi = ensure_variant()
    props = mi.Properties()
    if bsdf is not None:
        props["bsdf"] = bsdf
    mesh = mi.Mesh(name, len(vertices), len(faces), props, has_vertex_normals=True)
    params = mi.traverse(mesh)
    params["vertex_positions"] = np.ascontiguousarray(vertices, dtype=np.float32).ravel()
    params["faces"] = np.ascontiguousarray(faces, dtype=np.uint32).ravel()
    params["vertex_normals"] = np.ascontiguousarray(normals, dtype=np.float32).ravel()
    params.update()
    return mesh


def mesh_arrays(mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices (V, 3) float32, faces (F, 3) uint32, vertex normals (V, 3) or None) of a mesh."""
    mi = ensure_variant()
    params = mi.traverse(mesh)
    vertices = np.array(params["vertex_positions"], dtype=np.float32).reshape(-1, 3)
    faces = np.array(params["faces"], dtype=np.uint32).reshape(-1, 3)
    normals = (
        np.array(params["vertex_normals"], dtype=np.float32).reshape(-1, 3)
        if mesh.has_vertex_normals()
        else None
    )
    return vertices, faces, (normals if normals is not None and normals.size == vertices.size else None)


def radial_shape(
    name: str, radius_fn, rotation: np.ndarray | None = None, subdivisions: int = DEFAULT_SUBDIVISIONS
):
    """A star-shaped mesh: icosphere vertices moved to ``radius_fn(directions (N, 3)) -> (N,)``,
    rotated, and scaled so its farthest vertex is at distance 1."""
    directions, faces = icosphere(subdivisions)
    vertices = directions * radius_fn(directions)[:, None]
    if rotation is not None:
        vertices = vertices @ rotation.T
    vertices /= np.linalg.norm(vertices, axis=1).max()
    return mesh_from_arrays(name, vertices, faces)


def ellipsoid(axes, rotation: np.ndarray | None = None, subdivisions: int = DEFAULT_SUBDIVISIONS):
    """An ellipsoid mesh with semi-axes ``axes`` (a, b, c) along (x, y, z) before ``rotation``,
    scaled to the unit bounding sphere."""
    return radial_shape("ellipsoid", lambda d: superquadric_radius(d, axes, 1.0, 1.0), rotation, subdivisions)


def make_shape(name: str | os.PathLike, seed: int = 0, subdivisions: int = DEFAULT_SUBDIVISIONS):
    """A built-in shape (see the module docstring): a Mitsuba mesh, or for ``sphere`` the analytic
    sphere's dict. Deterministic by ``seed``. ``name`` may also be the path of an OBJ/PLY file:
    then it is :func:`load_mesh` (``seed`` unused), so a shape pool's member is always a name."""
    if name not in SHAPES:
        if Path(name).suffix.lower() in MESH_SUFFIXES:
            return load_mesh(name)
        raise InputError(f"shape {name!r}", f"unknown shape; choose one of {SHAPES} or give a mesh file")
    if name == "sphere":
        return {"type": "sphere", "center": [0.0, 0.0, 0.0], "radius": 1.0}
    rng = np.random.default_rng([seed, SHAPES.index(name)])
    rotation = random_rotation(rng)
    if name == "ellipsoid":
        return ellipsoid(rng.uniform(0.45, 1.0, size=3), rotation, subdivisions)
    if name == "superquadric":
        axes = rng.uniform(0.6, 1.0, size=3)
        e1, e2 = rng.uniform(0.35, 1.6, size=2)
        return radial_shape(name, lambda d: superquadric_radius(d, axes, e1, e2), rotation, subdivisions)
    return radial_shape(name, lambda d: blob_radius(d, rng), rotation, subdivisions)


def _has_file_normals(path: Path, plugin: str) -> bool:
    """Whether the file holds vertex normals: OBJ ``vn`` lines, PLY ``nx`` vertex properties (what
    decides, in Mitsuba's loaders, between the file's normals and computed ones)."""
    if plugin == "obj":
        with open(path, "rb") as handle:
            return any(_OBJ_NORMAL.match(line) for line in handle)
    header = []
    with open(path, "rb") as handle:
        for line in handle:
            header.append(line.strip())
            if line.strip() == b"end_header" or len(header) > 1000:
                break
    element = None
    for words in (line.split() for line in header):
        if words[:1] == [b"element"] and len(words) > 1:
            element = words[1]
        elif element == b"vertex" and words[:1] == [b"property"] and words[-1:] == [b"nx"]:
            return True
    return False


def load_mesh(path: str | os.PathLike):
    """Load an OBJ/PLY mesh with Mitsuba, centred on its bounding box and scaled to the unit
    bounding sphere. Smooth vertex normals: the file's, or for a file without any
    :func:`smooth_vertex_normals` (bit-for-bit reproducible). Raises InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    plugin = MESH_SUFFIXES.get(path.suffix.lower())
    if plugin is None:
        raise InputError(path, f"unsupported mesh format {path.suffix!r}; use one of {sorted(MESH_SUFFIXES)}")
    file_normals = _has_file_normals(path, plugin)
    mi = ensure_variant()
    try:
        # Without normals in the file, face_normals stops the loader computing its own (racy) ones.
        mesh = mi.load_dict({"type": plugin, "filename": str(path), "face_normals": not file_normals})
    except RuntimeError as error:
        raise InputError(
            path, f"unreadable {plugin.upper()} mesh ({str(error).strip().splitlines()[-1]})"
        ) from None
    vertices, faces, normals = mesh_arrays(mesh)
    if len(faces) == 0 or len(vertices) < 3:
        raise InputError(path, "the mesh has no triangles")
    if not np.isfinite(vertices).all():
        raise InputError(path, "the mesh has NaN/Inf vertex positions")
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    scale = float(np.linalg.norm(vertices - centre, axis=1).max())
    if scale == 0:
        raise InputError(path, "the mesh is degenerate (all vertices coincide)")
    vertices = (vertices - centre) / scale
    faces, normals = orient_outward(vertices, faces, normals, path)
    return mesh_from_arrays(path.stem, vertices, faces, normals=normals)


def is_closed(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether every edge is shared by exactly two faces once vertices at one position are welded
    (loaders split vertices at texture and normal seams)."""
    _, welded = np.unique(np.asarray(vertices), axis=0, return_inverse=True)
    f = welded.reshape(-1)[np.asarray(faces, dtype=np.int64)]
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool((counts == 2).all())


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed mesh, positive when its faces wind counter-clockwise seen from
    outside (their normals point out), negative when it is inside-out."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    return float(np.einsum("ij,ij->", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])) / 6.0)


def orient_outward(
    vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray | None, source: object = "mesh"
) -> tuple[np.ndarray, np.ndarray | None]:
    """(faces (F, 3), vertex normals (V, 3) or None) turned outward as the module docstring says;
    unchanged for a mesh already outward and for an open mesh. Warns once, naming ``source``."""
    if not is_closed(vertices, faces):
        return faces, normals
    fixed = []
    if signed_volume(vertices, faces) < 0:
        faces = np.ascontiguousarray(faces[:, [0, 2, 1]])
        fixed.append("its faces are wound inside-out: reversed their winding")
    if normals is not None:
        outward = smooth_vertex_normals(vertices, faces)
        inward = float(np.mean(np.einsum("ij,ij->i", np.asarray(normals, dtype=np.float64), outward) < 0))
        if inward >= INWARD_NORMALS:
            normals = -np.asarray(normals)
            fixed.append(f"{inward:.0%} of its vertex normals point into the object: flipped them")
    if fixed:
        warnings.warn(f"{source}: {'; '.join(fixed)}", stacklevel=3)
    return faces, normals
