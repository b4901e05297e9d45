"""Training curves as PNG images for the report, drawn with Pillow from ``plots/train_<net>.csv``
(one row per tick: samples, step, loss, its parts, samples/s, lr; pipeline/training/progress.py).
``dvc plots show`` renders the same file, but its page loads vega from a CDN and stays blank
offline; these images need nothing but the file.

An image has two panels over the training samples: the loss and its parts (``loss*`` columns) on
a log scale, and the learning rate on a linear one."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np

from rendering.errors import InputError

WIDTH, PANEL_HEIGHT = 720, 260  # pixels of the image, per panel
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 24, 34
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75)]
AXIS, GRID, TEXT = (90, 90, 90), (225, 225, 225), (20, 20, 20)


def read_curve(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{column: values} of a training curve CSV; InputError naming the file when it has no
    ``samples`` or ``loss`` column, no rows, or a value that is not a number."""
    path = Path(path)
    try:
        with open(path, newline="") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(path, f"cannot be read as a training curve ({error})") from None
    if not rows:
        raise InputError(path, "holds no ticks; train for at least one tick first")
    missing = {"samples", "loss"} - set(rows[0])
    if missing:
        raise InputError(path, f"lacks the column(s) {sorted(missing)} of a training curve")
    columns: dict[str, np.ndarray] = {}
    for name in rows[0]:
        try:
            columns[name] = np.array([float(row[name]) for row in rows])
        except (TypeError, ValueError):
            raise InputError(path, f"column {name!r} holds a value that is not a number") from None
    return columns


def curve_png(columns: dict[str, np.ndarray], title: str) -> bytes:
    """The curves of :func:`read_curve` as PNG bytes (the same bytes for the same columns)."""
    from PIL import Image, ImageDraw

    panels = [(f"{title}: loss (log scale)", [k for k in columns if k.startswith("loss")], True)]
    if "lr" in columns:
        panels.append(("learning rate", ["lr"], False))
    picture = Image.new("RGB", (WIDTH, PANEL_HEIGHT * len(panels)), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for index, (heading, names, log) in enumerate(panels):
        _panel(draw, index * PANEL_HEIGHT, heading, columns["samples"], {n: columns[n] for n in names}, log)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _panel(draw, top: int, heading: str, x: np.ndarray, series: dict[str, np.ndarray], log: bool) -> None:
    """One panel: axes with ticks, a line per series, a legend, the heading."""
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    upper, lower = top + MARGIN_TOP, top + PANEL_HEIGHT - MARGIN_BOTTOM
    values = {name: (np.log10(np.where(y > 0, y, np.nan)) if log else y) for name, y in series.items()}
    shown = np.concatenate([v[np.isfinite(v)] for v in values.values()])
    x0, x1 = _span(x[np.isfinite(x)])
    y0, y1 = _span(shown) if log else _span(np.append(shown, 0.0))  # a linear axis shows 0

    def to_pixel(xv: float, yv: float) -> tuple[float, float]:
        return left + (xv - x0) / (x1 - x0) * (right - left), lower - (yv - y0) / (y1 - y0) * (lower - upper)

    for tick in _ticks(y0, y1, log):
        _, py = to_pixel(x0, tick)
        draw.line([(left, py), (right, py)], fill=GRID)
        draw.text((4, py - 6), f"{10**tick:.3g}" if log else f"{tick:.3g}", fill=TEXT)
    for tick in _ticks(x0, x1, False):
        px, _ = to_pixel(tick, y0)
        draw.line([(px, lower), (px, lower + 4)], fill=AXIS)
        draw.text((px - 12, lower + 6), f"{tick:,.0f}" if tick == round(tick) else f"{tick:.3g}", fill=TEXT)
    draw.rectangle([(left, upper), (right, lower)], outline=AXIS)
    draw.text((left, top + 6), heading, fill=TEXT)
    draw.text((right - 110, lower + 20), "training samples", fill=TEXT)
    for number, (name, y) in enumerate(values.items()):
        colour = COLOURS[number % len(COLOURS)]
        segment: list[tuple[float, float]] = []
        for xv, yv in zip(x, y, strict=True):
            if math.isfinite(xv) and math.isfinite(yv):
                segment.append(to_pixel(xv, yv))
                continue
            _polyline(draw, segment, colour)
            segment = []
        _polyline(draw, segment, colour)
        if len(values) == 1:
            continue  # the heading names the one series
        legend_y = upper + 6 + 14 * number
        draw.line([(right - 150, legend_y + 6), (right - 130, legend_y + 6)], fill=colour, width=2)
        draw.text((right - 124, legend_y), name, fill=TEXT)


def _polyline(draw, points: list[tuple[float, float]], colour) -> None:
    if len(points) == 1:
        (px, py) = points[0]
        draw.ellipse([(px - 2, py - 2), (px + 2, py + 2)], fill=colour)
    elif points:
        draw.line(points, fill=colour, width=2)


def _span(values: np.ndarray) -> tuple[float, float]:
    """The axis range of ``values``: their min and max, widened when they are (nearly) equal."""
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    pad = 0.05 * (high - low) if high > low else (0.1 * abs(low) or 0.5)
    return low - pad, high + pad


def _ticks(low: float, high: float, log: bool) -> list[float]:
    """Tick positions within [low, high]: on a log axis (exponents) whole decades when it spans
    two, else 1, 2 and 5 times a power of ten when two of them fit; otherwise about five evenly
    spaced steps of 1, 2 or 5 times a power of ten."""
    if log and math.floor(high) - math.ceil(low) >= 1:
        return [float(k) for k in range(math.ceil(low), math.floor(high) + 1)]
    if log:
        decades = range(math.floor(low), math.ceil(high) + 1)
        marks = [k + math.log10(m) for k in decades for m in (1, 2, 5)]
        marks = [mark for mark in marks if low <= mark <= high]
        if len(marks) >= 2:
            return marks
    raw = (high - low) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [k * step for k in range(math.ceil(low / step), math.floor(high / step) + 1)]
