"""Prefect flows of the pipeline (``render-dataset``).

Defaults for Prefect's embedded (ephemeral) API are set here, before Prefect is imported, and
only where the user set nothing: a generous server start-up timeout (the first start migrates a
database, slow on a busy 2-core machine) and no telemetry (the machines may be offline).
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
