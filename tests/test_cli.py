"""The command line: fast to start and friendly on bad input."""

from __future__ import annotations

import subprocess
import sys


def test_help_does_not_import_torch_prefect_or_mlflow():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from pipeline.cli.app import app\n"
        "import pipeline.cli\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = [m for m in ('torch', 'prefect', 'mlflow', 'mitsuba') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`drmnet --help` imported {out.stdout.strip()}"


def test_every_command_has_help():
    from typer.main import get_command
    from typer.testing import CliRunner

    import pipeline.cli  # noqa: F401
    from pipeline.cli.app import app

    names = sorted(get_command(app).commands)
    assert "where" in names
    for name in names:
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0, f"drmnet {name} --help failed: {result.output}"


def test_where_points_at_the_tracking_server_in_use(monkeypatch):
    """`drmnet where` sends a user to the MLflow UI that holds their runs: the tracking server when
    MLFLOW_TRACKING_URI names one (not the embedded store's `make ui` port)."""
    from pipeline.cli.workspace import mlflow_ui_line

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:8080/")
    assert mlflow_ui_line() == "http://tracking.example:8080/#/models"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    line = mlflow_ui_line()
    assert line.startswith("`make ui`") and "PORT" in line
