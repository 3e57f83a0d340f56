"""Reading a `GET /metrics` answer (Prometheus text format) in tests, with the client library's parser."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# The sample suffixes each family type exposes (the parser names a counter family without `_total`).
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count"),
}


@dataclass(frozen=True)
class Scrape:
    text: str

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        return [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels` (0 when there are none)."""
        return sum(
            value
            for sample, found, value in self.samples()
            if sample == name and all(found.get(key) == wanted for key, wanted in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample == name and all(found.get(key) == wanted for key, wanted in labels.items())
            for sample, found, _value in self.samples()
        )

    def sample_names(self) -> set[str]:
        """Every series name the families declare, whether or not they have samples yet."""
        names: set[str] = set()
        for family in text_string_to_metric_families(self.text):
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        return names


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)
