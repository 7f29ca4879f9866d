"""docs/reference/metrics.md lists exactly the registered metrics, with their labels and values."""

from __future__ import annotations

import re
from pathlib import Path

from agent.telemetry import Metrics

DOC = Path(__file__).parents[3] / "docs" / "reference" / "metrics.md"
FREE_LABELS = {"version", "python"}  # build_info: descriptive values, not a closed set


def documented_rows() -> dict[str, list[str]]:
    """``| `name` | type | labels | ...`` rows of the agent metrics table, by metric name."""
    section = DOC.read_text(encoding="utf-8").split("## Agent metrics", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(edge_agent_\w+)`", cells[0]) if cells else None
        if match:
            rows[match.group(1)] = cells
    return rows


def registered() -> dict[str, tuple[str, dict[str, set[str]]]]:
    """Exposed name -> (type, label name -> values) of every ``edge_agent_`` family."""
    out: dict[str, tuple[str, dict[str, set[str]]]] = {}
    for family in Metrics(process_metrics=False).registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels: dict[str, set[str]] = {}
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label != "le":
                    labels.setdefault(label, set()).add(value)
        out[name] = (family.type, labels)
    return out


def test_metrics_doc_lists_every_registered_family():
    """Every family the agent registers has a row, and every row is a registered family."""
    assert set(documented_rows()) == set(registered())


def test_metrics_doc_types_labels_and_values_match():
    """Each row names the family's type, its label names and every value of a closed label set."""
    rows = documented_rows()
    for name, (kind, labels) in registered().items():
        cells = rows[name]
        assert cells[1] == kind, name
        for label, values in labels.items():
            assert f"`{label}`" in cells[2], (name, label)
            if label in FREE_LABELS:
                continue
            missing = {v for v in values if f"`{v}`" not in cells[2]}
            assert not missing, (name, label, missing)
