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
    """Per test set: sample count, the split directory its samples came from (the test shards, or
    the measured test set's) and the digests of its manifest and of the envmaps table."""
    from pipeline.reader import SHARDS_MANIFEST
    from pipeline.splits import ENVMAP_TABLE

    test_split_dir = Path(settings.shards) / settings.dataset / "test"
    table = Path(settings.envmaps) / "test" / ENVMAP_TABLE
    out = {}
    for name, samples in test_sets.items():
        split_dir = Path(samples[0].info.get("split_dir", test_split_dir)) if samples else test_split_dir
        manifest = split_dir / SHARDS_MANIFEST
        out[name] = {
            "samples": len(samples),
            "source": str(split_dir),
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
