"""Reading the agent's ``/metrics`` page: sums of samples by name and labels."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    """One sample of the exposition."""

    name: str
    labels: dict[str, str]
    value: float


class MetricsPage:
    """One scrape of ``/metrics``, parsed."""

    def __init__(self, text: str) -> None:
        """Parse the text exposition."""
        self.text = text
        self.samples = [
            Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def has(self, name: str) -> bool:
        """Whether any sample of ``name`` is exported (a family that does not exist yet: no)."""
        return any(s.name == name for s in self.samples)

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """Values of ``name`` per value of ``label`` (summed over the other labels), non-zero."""
        out: dict[str, float] = {}
        for s in self.samples:
            if s.name == name and s.value:
                key = s.labels.get(label, "")
                out[key] = out.get(key, 0.0) + s.value
        return out
