"""`drmnet report`: a self-contained HTML page and a Markdown file that show every metric,
every gallery image and where the numbers came from."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from tiny_workspace import make_test_data, run_cli, save_tiny_models

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def report(tmp_path_factory, one_torch_thread):
    """Evaluate tiny checkpoint directories (no registry) and build the report from it."""
    from pipeline.flows.evaluate import run_evaluation
    from pipeline.report import build_report

    root = tmp_path_factory.mktemp("report")
    params = make_test_data(root)
    params["evaluate"]["test_sets"] = ["principled"]  # the measured set is covered by test_evaluation
    drmnet, obsnet = save_tiny_models(root / "models")
    run_evaluation(params, model=str(drmnet), obsnet=str(obsnet), out_dir=root / "eval")
    html_path, md_path = build_report(root / "eval", root / "reports")
    return {"root": root, "html": html_path.read_text(), "md": md_path.read_text(), "eval": root / "eval"}


def _decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    assert data.startswith(b"\x89PNG"), "not a PNG"
    return np.asarray(Image.open(io.BytesIO(data)))


def test_html_embeds_every_gallery_image_as_a_valid_png(report):
    gallery = sorted(report["eval"].glob("gallery/*/*/*.png"))
    assert gallery
    embedded = dict(
        re.findall(r'<img src="data:image/png;base64,([^"]+)" data-file="([^"]+)"', report["html"])
    )
    by_file = {file: data for data, file in embedded.items()}
    for path in gallery:
        source = path.relative_to(report["eval"]).as_posix()
        assert source in by_file, f"{source} is not in the report"
        pixels = _decode_png(base64.b64decode(by_file[source]))
        assert pixels.size and np.isfinite(pixels.astype(np.float64)).all()
    assert 'src="http' not in report["html"] and "src='http" not in report["html"]  # self-contained


def test_markdown_links_every_image_to_an_existing_file(report):
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report["md"])
    assert len(links) == len(list(report["eval"].glob("gallery/*/*/*.png")))
    for link in links:
        assert (report["root"] / "reports" / link).is_file(), link


def test_report_shows_the_metrics_of_every_method_and_their_provenance(report):
    metrics = json.loads((report["eval"] / "metrics.json").read_text())
    provenance = json.loads((report["eval"] / "provenance.json").read_text())
    for text in (report["html"], report["md"]):
        assert "tone-mapped" in text  # the protocol's operator is stated with the numbers
        for test_set, methods in metrics.items():
            assert test_set in text
            for method, values in methods.items():
                assert method in text
                for metric in ("mirror_si_rmse", "mirror_rel_si_rmse", "mirror_rel_si_rmse_median"):
                    assert f"{values[metric]:.4g}" in text
        assert provenance["git_commit"] in text
        assert provenance["models"]["drmnet"]["sha256"] in text


def test_report_command_without_an_evaluation_names_what_is_missing(tmp_path, monkeypatch, capsys):
    code, output = run_cli(
        ["report", "--eval", tmp_path / "none", "--out", tmp_path / "r"], monkeypatch, capsys
    )
    assert code == 2 and "metrics.json" in output and "drmnet evaluate" in output
