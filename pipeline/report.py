"""The evaluation report: ``reports/report.html`` (self-contained, images embedded as base64 PNG)
and ``reports/report.md`` (images copied next to it), built from what ``evaluate`` wrote.

Inputs, all but the last under the evaluation directory (see :mod:`pipeline.evaluation`):

- ``metrics.json``: ``{group: {method: {metric: mean, <metric>_median: median}}}``, groups
  being the test sets and their ``<test set>/<envmap kind>`` parts;
- ``provenance.json``: git commit, model versions, params, data manifests, counts;
- ``champion.json``: the registry decision (promoted or not, and why);
- ``gallery/<test_set>/<key>/gallery.json``: per sample, groups of captioned images (PNG files
  in the same directory) and lines of text;
- and, from the plots directory of the training stages, ``train_<net>.csv``: the loss curves,
  drawn into ``curves/train_<net>.png`` (:mod:`pipeline.loss_curves`).

The report adds nothing that ``evaluate`` did not measure: it lays tables and images out. Every
image of the gallery appears in both files (the HTML ``<img>`` tags carry a ``data-file``
attribute naming the source PNG, so a test can check that nothing is missing).

Text taken from these files (test set and method names, envmap ids and kinds, material names,
the registry decision, captions) is escaped in both files, so that Markdown or HTML in it shows as
written instead of becoming markup; a gallery's image names must be plain file names in its
directory.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fileio.atomic import atomic_write_bytes
from pipeline.loss_curves import curve_png, read_curve
from pipeline.manifest import is_plain_file_name
from rendering.errors import InputError

SPHERES = ("mirror", "matte_silver", "diffuse")
SPHERE_METRICS = {
    "rmse": "RMSE",
    "si_rmse": "si-RMSE",
    "nrmse": "nRMSE",
    "rel_si_rmse": "rel. si-RMSE",
    "rel_si_rmse_median": "rel. si-RMSE median",
    "angular": "angle °",
}
# Metric → (heading, True when lower is better, None when neither). Order = column order.
OTHER_METRICS = {
    "envmap_log_rmse": ("envmap log-RMSE", True),
    "refmap_si_rmse": ("mirror refmap si-RMSE", True),
    "refmap_rel_si_rmse": ("mirror refmap rel. si-RMSE", True),
    "refmap_rel_si_rmse_median": ("mirror refmap rel. si-RMSE median", True),
    "refmap_log_lum_rmse": ("mirror refmap log-lum. RMSE", True),
    "material_mae": ("material MAE", True),
    "rerender_nrmse": ("re-render nRMSE", True),
    "spread": ("sample spread", None),
    "calibration": ("coverage of ±2σ", None),
}
METHOD_NOTES = {
    "drmnet": "DRMNet, metric averaged over the N stochastic samples",
    "drmnet_mean": "DRMNet, the per-pixel mean of the N samples' envmaps (and mean material)",
    "observed_mirror": "baseline: the observed refmap read as a mirror refmap (holes filled with its mean)",
    "completed_mirror": "baseline: ObsNet's completion (mean of the N) read as a mirror refmap",
    "constant_mean": "baseline: a constant environment of the observation's mean colour",
    "oracle": "floor: the true mirror refmap through the same mirror → envmap conversion, true material",
}
PROTOCOL_NOTE = (
    "Lower is better except spread and coverage; the best value of each column is highlighted. "
    "Sphere metrics are computed on spheres rendered under tone-mapped envmaps (StyleLight's "
    "operator: clip(α·x^(1/2.4), 0, 1), α putting the truth's 99th percentile at 0.99; the "
    "estimate scale-aligned to the truth first). si-RMSE: after the optimal global scale; rel. "
    "si-RMSE: si-RMSE / RMS(truth), per sample; angle: mean per-pixel angle between RGB vectors. "
    "Tables: means over the samples, medians where said; <test set>/<kind> rows split a test set "
    "by the kind of envmap (real maps are the test that counts)."
)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object that `evaluate` wrote; InputError naming the file when it is missing or broken."""
    if not path.exists():
        raise InputError(path, "does not exist; run `drmnet evaluate` (or `dvc repro evaluate`) first")
    try:
        value = json.loads(path.read_text())
    except ValueError as error:  # bad JSON, or not text at all
        raise InputError(path, f"is not valid JSON ({error}); rerun `drmnet evaluate`") from None
    if not isinstance(value, dict):
        raise InputError(path, f"holds a JSON {type(value).__name__}, not the object `evaluate` writes")
    return value


def _galleries(eval_dir: Path, order: list[str]) -> list[tuple[str, str, Path, dict[str, Any]]]:
    """(test_set, key, directory, gallery.json) of every gallery sample: test sets in ``order``
    (then any other), keys sorted."""
    out = []
    for path in sorted((eval_dir / "gallery").glob("*/*/gallery.json")):
        gallery = _read_json(path)
        _check_gallery(gallery, path)
        out.append((path.parent.parent.name, path.parent.name, path.parent, gallery))
    rank = {name: i for i, name in enumerate(order)}
    return sorted(out, key=lambda item: (rank.get(item[0], len(rank)), item[0], item[1]))


def _check_gallery(gallery: dict[str, Any], path: Path) -> None:
    """A gallery.json as `evaluate` writes it: lines of text, and groups of images, each image a
    PNG beside the file named by a plain file name (the report reads and copies it: a name such as
    ``../../secret`` must not reach outside the gallery). InputError naming the file otherwise."""

    def bad(problem: str) -> InputError:
        return InputError(path, f"{problem}; rerun `drmnet evaluate`")

    text, groups = gallery.get("text", []), gallery.get("groups", [])
    if not isinstance(text, list) or not isinstance(groups, list):
        raise bad("`text` and `groups` must be lists")
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("images"), list):
            raise bad("each group must be an object with a list of `images`")
        for image in group["images"]:
            name = image.get("file") if isinstance(image, dict) else None
            if not is_plain_file_name(name):
                raise bad(f"names the image {name!r}, which is not a file name in its directory")
            if not (path.parent / name).is_file():
                raise bad(f"names the image {name!r}, which does not exist beside it")


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#!|~&])")
_MD_LINE_START = re.compile(r"^(\d*)([-+=.)])")  # a list item, a setext underline, an ordered list


def _md(text: object, starts_line: bool = False) -> str:
    """Text taken from a file as literal Markdown: one line (a newline could start a heading or a
    table row), each character that Markdown or HTML reads as markup backslash-escaped, so that a
    name such as ``<img src=x onerror=…>`` or ``[x](javascript:…)`` shows as written.
    ``starts_line``: the text begins a line, where ``- ``, ``1. `` or ``===`` are markup too."""
    line = _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
    return _MD_LINE_START.sub(r"\1\\\2", line) if starts_line else line


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass
class Table:
    """A metrics table: ``groups`` (label, column span) head the ``header`` columns when given."""

    header: list[str]
    rows: list[list[str]]
    best: list[list[bool]]  # per cell: the best value of its column
    groups: list[tuple[str, int]] | None = None
    css: str = "metrics"  # the HTML table's class


def _table(
    methods: dict[str, dict[str, float]], columns: dict[str, tuple[str, bool | None]], groups=None
) -> Table:
    """Rows = methods, columns = metrics (``{metric: (heading, lower is better)}``)."""
    present = [m for m in columns if any(m in values for values in methods.values())]
    best: dict[str, str | None] = {}
    for metric in present:
        values = {m: v[metric] for m, v in methods.items() if metric in v and v[metric] == v[metric]}
        lower = columns[metric][1]
        best[metric] = None if lower is None or len(values) < 2 else min(values, key=values.get)
    rows = [[method, *(_format(values.get(m, "–")) for m in present)] for method, values in methods.items()]
    flags = [[False, *(best[m] == method for m in present)] for method in methods]
    return Table(["method", *(columns[m][0] for m in present)], rows, flags, groups)


def _metric_tables(metrics: dict[str, Any]) -> list[tuple[str, list[Table]]]:
    """Per test set: the three-sphere table (grouped by sphere) and the table of the rest."""
    out = []
    for test_set, methods in metrics.items():
        spheres = [s for s in SPHERES if any(f"{s}_si_rmse" in v for v in methods.values())]
        sphere_columns = {f"{s}_{k}": (h, True) for s in spheres for k, h in SPHERE_METRICS.items()}
        shown = [m for m in sphere_columns if any(m in values for values in methods.values())]
        spans = [sum(m.startswith(f"{s}_") for m in shown) for s in spheres]
        groups = [("", 1)] + [
            (f"{s.replace('_', ' ')} sphere", n) for s, n in zip(spheres, spans, strict=True)
        ]
        out.append((test_set, [_table(methods, sphere_columns, groups), _table(methods, OTHER_METRICS)]))
    return out


# -- HTML ----------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.45em; text-align: right; }
th { background: #f3f3f3; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
td.best { font-weight: bold; background: #e8f4e8; }
table.provenance td { text-align: left; }
.sample { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; margin: 1em 0; }
.group { margin: 0.5em 0; } .group h4 { margin: 0.3em 0; }
.images { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; text-align: center; font-size: 0.8em; width: min-content; }
figure img { display: block; height: 112px; image-rendering: pixelated; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
"""


def _html_table(table: Table) -> str:
    head = ""
    if table.groups:
        head += "<tr>" + "".join(
            f"<th colspan={span}>{html.escape(label)}</th>" for label, span in table.groups
        )
        head += "</tr>"
    head += "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.header) + "</tr>"
    body = []
    for row, flags in zip(table.rows, table.best, strict=True):
        cells = [
            f"<td{' class=best' if best else ''}>{html.escape(c)}</td>"
            for c, best in zip(row, flags, strict=True)
        ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table class={table.css}>{head}{''.join(body)}</table>"


def _html_image(path: Path, caption: str, source: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" data-file="{html.escape(source)}" '
        f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _provenance_table(provenance: dict[str, Any]) -> Table:
    rows = [["git commit", str(provenance.get("git_commit", "unknown"))]]
    for role, model in provenance.get("models", {}).items():
        described = ", ".join(f"{k}={v}" for k, v in model.items() if v is not None)
        rows.append([f"model: {role}", described])
    for test_set, data in provenance.get("data", {}).items():
        described = ", ".join(f"{k}={v}" for k, v in data.items())
        rows.append([f"data: {test_set}", described])
    rows.append(["evaluated at", str(provenance.get("time", "unknown"))])
    return Table(["what", "value"], rows, [[False, False] for _ in rows], css="provenance")


def _count(provenance: dict[str, Any], test_set: str) -> str:
    """The " (n = N)" after a test set's name (plain text: escaped where it is used)."""
    count = provenance.get("counts", {}).get(test_set)
    return f" (n = {count})" if count else ""


def _html(eval_dir: Path, metrics, provenance, champion, galleries, curves: Curves | None = None) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>drmnet evaluation report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>drmnet evaluation report</h1>",
        f"<p class=note>Generated {html.escape(generated)} from <code>{html.escape(str(eval_dir))}</code>. "
        f"{html.escape(PROTOCOL_NOTE)}</p>",
        "<h2>Metrics</h2>",
    ]
    if champion:
        parts.append(f"<p><b>Registry:</b> {html.escape(str(champion.get('decision', '')))}</p>")
    for test_set, tables in _metric_tables(metrics):
        parts.append(f"<h3>{html.escape(test_set + _count(provenance, test_set))}</h3>")
        parts += [_html_table(table) for table in tables]
    notes = "".join(f"<li><b>{html.escape(m)}</b>: {html.escape(n)}</li>" for m, n in METHOD_NOTES.items())
    parts.append(f"<ul class=note>{notes}</ul>")
    if curves is not None:
        parts.append("<h2>Training</h2>")
        parts.append(f"<p class=note>{html.escape(curves.note())}</p><div class=images>")
        for name, path in curves.images:
            parts.append(_html_image(path, f"{path.stem}: loss, learning rate", name))
        parts.append("</div>")
    parts.append("<h2>Provenance</h2>")
    parts.append(_html_table(_provenance_table(provenance)))
    params = html.escape(json.dumps(provenance.get("params", {}), indent=1))
    parts.append(f"<details><summary>Parameters</summary><pre>{params}</pre></details>")
    parts.append("<h2>Gallery</h2>")
    for test_set, key, directory, gallery in galleries:
        parts.append(f"<div class=sample><h3>{html.escape(test_set)} / {html.escape(key)}</h3>")
        parts += [f"<p class=note>{html.escape(str(line))}</p>" for line in gallery.get("text", [])]
        for group in gallery.get("groups", []):
            title = html.escape(str(group.get("title", "")))
            parts.append(f"<div class=group><h4>{title}</h4><div class=images>")
            for image in group["images"]:
                source = f"gallery/{test_set}/{key}/{image['file']}"
                caption = str(image.get("caption", ""))
                parts.append(_html_image(directory / image["file"], caption, source))
            parts.append("</div></div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


# -- Markdown ------------------------------------------------------------------------------------


def _md_table(table: Table) -> str:
    header = list(table.header)
    if table.groups:  # Markdown has no column groups: prefix each heading with its group
        labels = [label for label, span in table.groups for _ in range(span)]
        header = [
            f"{label.removesuffix(' sphere')} {h}".strip() for label, h in zip(labels, header, strict=True)
        ]
    lines = ["| " + " | ".join(map(_md, header)) + " |", "|" + "---|" * len(header)]
    for row, flags in zip(table.rows, table.best, strict=True):
        cells = [f"**{_md(c)}**" if best else _md(c) for c, best in zip(row, flags, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md_alt(caption: str) -> str:
    """Alt text cannot hold brackets (material vectors are written "[…]")."""
    return caption.replace("[", "(").replace("]", ")")


def _markdown(metrics, provenance, champion, galleries, image_dir: str, curves: Curves | None = None) -> str:
    parts = ["# drmnet evaluation report", "", "## Metrics", "", PROTOCOL_NOTE, ""]
    if champion:
        parts += [f"**Registry:** {_md(champion.get('decision', ''))}", ""]
    for test_set, tables in _metric_tables(metrics):
        parts += [f"### {_md(test_set + _count(provenance, test_set))}", ""]
        for table in tables:
            parts += [_md_table(table), ""]
    parts += [f"- **{m}**: {n}" for m, n in METHOD_NOTES.items()]
    if curves is not None:
        parts += ["", "## Training", "", _md(curves.note()), ""]
        parts += [f"![{path.stem}: loss, learning rate]({quote(name)})" for name, path in curves.images]
    parts += ["", "## Provenance", "", _md_table(_provenance_table(provenance)), ""]
    params = json.dumps(provenance.get("params", {}), indent=1)
    fence = "`" * max(3, 1 + max(map(len, re.findall("`+", params)), default=0))  # longer than any in it
    parts += [f"{fence}json", params, fence, "", "## Gallery", ""]
    for test_set, key, _, gallery in galleries:
        parts += [f"### {_md(test_set)} / {_md(key)}", ""]
        parts += [f"{_md(line, starts_line=True)}  " for line in gallery.get("text", [])]
        for group in gallery.get("groups", []):
            parts += ["", f"**{_md(group.get('title', ''))}**", ""]
            for image in group["images"]:
                alt = _md(_md_alt(str(image.get("caption", ""))))
                link = quote(f"{image_dir}/{test_set}/{key}/{image['file']}")
                parts.append(f"![{alt}]({link})")
        parts.append("")
    return "\n".join(parts) + "\n"


def build_report(
    eval_dir: str | os.PathLike = "eval",
    out_dir: str | os.PathLike = "reports",
    plots_dir: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` and ``out_dir/report.md`` (+ ``out_dir/images/``) from the
    evaluation in ``eval_dir``, with the training curves of ``plots_dir`` (``train_<net>.csv``)
    drawn into ``out_dir/curves/`` when it is given. Returns (html path, markdown path)."""
    eval_dir, out_dir = Path(eval_dir), Path(out_dir)
    metrics = _read_json(eval_dir / "metrics.json")
    provenance = _read_json(eval_dir / "provenance.json")
    champion_path = eval_dir / "champion.json"
    champion = _read_json(champion_path) if champion_path.exists() else None
    galleries = _galleries(eval_dir, list(metrics))

    images = out_dir / "images"
    if images.exists():
        shutil.rmtree(images)
    for test_set, key, directory, gallery in galleries:
        target = images / test_set / key
        target.mkdir(parents=True, exist_ok=True)
        for group in gallery.get("groups", []):
            for image in group["images"]:
                shutil.copyfile(directory / image["file"], target / image["file"])

    curves = None if plots_dir is None else _write_curves(Path(plots_dir), out_dir / "curves")
    html_path = atomic_write_bytes(
        out_dir / "report.html", _html(eval_dir, metrics, provenance, champion, galleries, curves).encode()
    )
    md_path = atomic_write_bytes(
        out_dir / "report.md", _markdown(metrics, provenance, champion, galleries, "images", curves).encode()
    )
    return html_path, md_path


@dataclass
class Curves:
    """The training curves shown: where they came from, and (name relative to the report, file)
    of each image."""

    plots_dir: Path
    images: list[tuple[str, Path]]

    def note(self) -> str:
        if not self.images:
            return f"No training curves (train_<net>.csv) in {self.plots_dir}."
        return (
            f"From {self.plots_dir}/train_<net>.csv: the loss and its parts at every tick of training "
            "(mean over the tick, log scale), and the learning rate, over the training samples seen."
        )


def _write_curves(plots_dir: Path, target: Path) -> Curves:
    """``target/train_<net>.png`` for every ``plots_dir/train_<net>.csv`` (stale images removed first)."""
    if target.exists():
        shutil.rmtree(target)
    images = []
    for csv_path in sorted(plots_dir.glob("train_*.csv")):
        png = curve_png(read_curve(csv_path), csv_path.stem.removeprefix("train_"))
        path = atomic_write_bytes(target / f"{csv_path.stem}.png", png)
        images.append((f"{target.name}/{path.name}", path))
    return Curves(plots_dir, images)
