"""What identifies an evaluation's test data and settings (``provenance.json``), so that two
primary values are compared only when they come from the same samples (the champion decision,
:func:`pipeline.registry.decide_champion`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.evaluation.results import settings_record
from pipeline.evaluation.test_sets import TestSample
from pipeline.settings import EvaluateSettings
from pipeline.shards import file_sha256


def data_record(settings: EvaluateSettings, test_sets: dict[str, list[TestSample]]) -> dict[str, Any]:
    """Per test set: sample count and the digests of the manifests the samples came from."""
    from pipeline.reader import SHARDS_MANIFEST
    from pipeline.splits import ENVMAP_TABLE

    split_dir = Path(settings.shards) / settings.dataset / "test"
    manifest = split_dir / SHARDS_MANIFEST
    table = Path(settings.envmaps) / "test" / ENVMAP_TABLE
    out = {}
    for name, samples in test_sets.items():
        rendered_here = any(s.info.get("rendered_here") for s in samples)
        out[name] = {
            "samples": len(samples),
            "source": "rendered by evaluate (built-in measured BRDFs)" if rendered_here else str(split_dir),
            "shards_manifest_sha256": file_sha256(manifest)[:16] if manifest.exists() else None,
            "envmaps_table_sha256": file_sha256(table)[:16] if table.exists() else None,
        }
    return out


def fingerprint(data: dict[str, Any], settings: EvaluateSettings) -> str:
    """Identifies the test data and evaluation settings: equal fingerprints → comparable values."""
    text = json.dumps(
        {"data": data, "settings": settings_record(settings, with_models=False)}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
