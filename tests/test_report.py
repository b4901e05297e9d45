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


# --- training curves ----------------------------------------------------------------------------


def _training_plots(directory):
    """plots/train_<net>.csv as training writes them (its own writer): the loss falls from 1 to
    0.01 and one of its parts with it, while the learning rate warms up."""
    from pipeline.training.progress import write_curve

    ticks = range(1, 21)
    write_curve(directory / "train_drmnet.csv", [
        {"samples": 100 * t, "step": 10 * t, "loss": 10 ** (-2 * (t - 1) / 19),
         "loss_residual": 0.1 * 10 ** (-(t - 1) / 19), "samples_per_second": 50.0, "lr": min(t, 10) * 1e-4}
        for t in ticks
    ])  # fmt: skip
    write_curve(directory / "train_obsnet.csv", [
        {"samples": 100 * t, "step": 10 * t, "loss": 1.0 / t, "samples_per_second": 50.0, "lr": 1e-4}
        for t in ticks
    ])  # fmt: skip


def test_report_shows_the_training_curves_as_images_that_need_no_network(report, tmp_path):
    from pipeline.loss_curves import COLOURS, MARGIN_LEFT, PANEL_HEIGHT, WIDTH
    from pipeline.report import build_report

    _training_plots(tmp_path / "plots")
    html_path, md_path = build_report(report["eval"], tmp_path / "reports", tmp_path / "plots")
    markup = html_path.read_text()
    embedded = dict(
        (file, data)
        for data, file in re.findall(r'src="data:image/png;base64,([^"]+)" data-file="([^"]+)"', markup)
    )
    assert {"curves/train_drmnet.png", "curves/train_obsnet.png"} <= set(embedded)
    assert markup.index("<h2>Training</h2>") < markup.index("<h2>Gallery</h2>")
    assert "http" not in markup.split("<h2>Training</h2>")[1].split("<h2>")[0]  # nothing to fetch
    links = re.findall(r"!\[[^\]]*\]\((curves/[^)]+)\)", md_path.read_text())
    assert links == ["curves/train_drmnet.png", "curves/train_obsnet.png"]
    assert all((tmp_path / "reports" / link).is_file() for link in links)

    pixels = _decode_png(base64.b64decode(embedded["curves/train_drmnet.png"]))
    assert pixels.shape == (2 * PANEL_HEIGHT, WIDTH, 3)  # a loss panel and a learning-rate panel

    def rows_of(colour, panel, columns):
        """Mean row of the pixels of a series' colour in a panel, over a range of columns."""
        top = panel * PANEL_HEIGHT
        area = pixels[top : top + PANEL_HEIGHT, columns]
        return np.nonzero((area == colour).all(axis=-1))[0].mean()

    plot_width = WIDTH - MARGIN_LEFT
    early = slice(MARGIN_LEFT, MARGIN_LEFT + plot_width // 4)
    late = slice(MARGIN_LEFT + plot_width // 2, MARGIN_LEFT + 3 * plot_width // 4)  # left of the legend
    loss, part = COLOURS[0], COLOURS[1]
    assert rows_of(loss, 0, early) < rows_of(loss, 0, late)  # the loss falls: its line goes down
    assert rows_of(part, 0, early) < rows_of(part, 0, late)  # and so does the part drawn with it
    assert rows_of(loss, 1, early) > rows_of(loss, 1, late)  # the learning rate rises in warm-up


def test_report_without_training_curves_says_so(report, tmp_path, monkeypatch, capsys):
    code, output = run_cli(
        ["report", "--eval", report["eval"], "--plots", tmp_path / "none", "--out", tmp_path / "r"],
        monkeypatch,
        capsys,
    )
    assert code == 0, output
    assert "No training curves" in (tmp_path / "r" / "report.md").read_text()
    assert not list((tmp_path / "r").glob("curves/*.png"))


def test_a_training_curve_that_is_not_one_is_an_error_naming_the_file(report, tmp_path, monkeypatch, capsys):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "train_drmnet.csv").write_text("samples,loss\n100,fast\n")
    code, output = run_cli(
        ["report", "--eval", report["eval"], "--plots", tmp_path / "plots", "--out", tmp_path / "r"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "train_drmnet.csv" in output and "'loss'" in output, output
    assert "Traceback" not in output


# --- text from files is shown as written -------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
LINK = "[click](javascript:alert(1))"


def _hostile_evaluation(root):
    """An evaluation whose names and texts carry Markdown and HTML: a method named like a script,
    an envmap kind and a MERL file named like links, a decision that starts a heading."""
    from rendering.hdrio import write_png

    test_set = f"principled{LINK}"
    evaluation = root / "eval"
    gallery = evaluation / "gallery" / test_set / "sample-000"
    gallery.mkdir(parents=True)
    write_png(gallery / "input.png", np.full((4, 4, 3), 128, np.uint8))
    metrics = {
        test_set: {"drmnet": {"mirror_si_rmse": 0.25}, SCRIPT: {"mirror_si_rmse": 0.5}},
        f"{test_set}/{IMG}": {"drmnet": {"mirror_si_rmse": 0.3}},
    }
    provenance = {
        "git_commit": f"abc123 {IMG}",
        "models": {"drmnet": {"uri": LINK}},
        "counts": {test_set: f"2 {SCRIPT}"},
        "params": {"note": f"```\n{SCRIPT}"},
    }
    text = [f"- material: {IMG}.binary; envmap user-x ({LINK})", "1. | a | b |", "==="]
    caption = f"input {IMG} [1, 1]"
    entry = {
        "text": text,
        "groups": [{"title": f"**{SCRIPT}**", "images": [{"file": "input.png", "caption": caption}]}],
    }
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    (evaluation / "provenance.json").write_text(json.dumps(provenance))
    (evaluation / "champion.json").write_text(json.dumps({"decision": f"promoted\n# Owned {SCRIPT}"}))
    (gallery / "gallery.json").write_text(json.dumps(entry))
    return evaluation, gallery


def _elements(markup: str) -> tuple[list[tuple[str, dict]], str]:
    """The (tag, attributes) of every element of an HTML text, and its text content."""
    from html.parser import HTMLParser

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.text = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, dict(attrs)))

        def handle_data(self, data):
            self.text.append(data)

    parser = Collect()
    parser.feed(markup)
    return parser.tags, " ".join(" ".join(parser.text).split())


def test_report_shows_text_from_files_as_written_not_as_markup(tmp_path, monkeypatch, capsys):
    """Names and texts in the evaluation files (method names, envmap ids and kinds, material file
    names, the registry decision) cannot add elements, links or headings to either report."""
    from markdown_it import MarkdownIt

    evaluation, _ = _hostile_evaluation(tmp_path)
    code, output = run_cli(
        ["report", "--eval", evaluation, "--plots", tmp_path / "plots", "--out", tmp_path / "reports"],
        monkeypatch,
        capsys,
    )
    assert code == 0, output
    markdown = (tmp_path / "reports" / "report.md").read_text()
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    for name, markup in (
        ("report.md", rendered),
        ("report.html", (tmp_path / "reports" / "report.html").read_text()),
    ):
        tags, text = _elements(markup)
        names = [tag for tag, _ in tags]
        assert "script" not in names and "a" not in names and names.count("h1") == 1, name
        assert names.count("img") == 1 and not any(key.startswith("on") for _, a in tags for key in a), name
        for shown in (SCRIPT, IMG, LINK, "# Owned", "- material:", "1. | a | b |"):
            assert shown in text, (name, shown)
    assert "(reports/images" not in markdown and (tmp_path / "reports" / "images").is_dir()


@pytest.mark.parametrize("image", ["../../../secret.png", "/etc/passwd", "missing.png"])
def test_a_gallery_naming_an_image_outside_its_directory_is_refused(image, tmp_path, monkeypatch, capsys):
    """The report copies and embeds each gallery image: a name from gallery.json must not lead it
    to read or write outside the gallery."""
    evaluation, gallery = _hostile_evaluation(tmp_path)
    (tmp_path / "secret.png").write_bytes((gallery / "input.png").read_bytes())
    entry = json.loads((gallery / "gallery.json").read_text())
    entry["groups"][0]["images"][0]["file"] = image
    (gallery / "gallery.json").write_text(json.dumps(entry))
    code, output = run_cli(
        ["report", "--eval", evaluation, "--plots", tmp_path / "plots", "--out", tmp_path / "reports"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert output.startswith(f"error: {gallery / 'gallery.json'}: names the image {image!r}, which ")
    assert not (tmp_path / "reports").exists()
