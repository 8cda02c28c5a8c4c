"""A small metrics registry rendering the Prometheus text exposition format 0.0.4."""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    type_name = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r}")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}

    def _key(self, labels: dict[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} expects labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def _child(self, labels: dict[str, object]):
        key = self._key(labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def _new_child(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def header(self) -> list[str]:
        return [
            f"# HELP {self.name} {escape_help(self.documentation)}",
            f"# TYPE {self.name} {self.type_name}",
        ]

    def render(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Counter(_Metric):
    type_name = "counter"

    def _new_child(self) -> _Value:
        return _Value()

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if amount < 0:
            raise ValueError("a counter can only increase")
        self._child(labels).value += amount

    def get(self, **labels: object) -> float:
        child = self._children.get(self._key(labels))
        return child.value if child else 0.0

    def render(self) -> list[str]:
        lines = self.header()
        if not self.labelnames and not self._children:
            lines.append(f"{self.name} 0")
        for key, child in sorted(self._children.items()):
            lines.append(
                f"{self.name}{_labels_text(self.labelnames, key)} {format_value(child.value)}"
            )
        return lines


class Gauge(Counter):
    type_name = "gauge"

    def set(self, value: float, **labels: object) -> None:
        self._child(labels).value = float(value)

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        self._child(labels).value += amount

    def dec(self, amount: float = 1.0, **labels: object) -> None:
        self._child(labels).value -= amount


class _HistogramValue:
    __slots__ = ("count", "counts", "sum")

    def __init__(self, n: int) -> None:
        self.counts = [0] * n
        self.sum = 0.0
        self.count = 0


class Histogram(_Metric):
    type_name = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError("histogram buckets must be distinct and non-empty")
        self.buckets = tuple(bounds)

    def _new_child(self) -> _HistogramValue:
        return _HistogramValue(len(self.buckets))

    def observe(self, value: float, **labels: object) -> None:
        child = self._child(labels)
        index = bisect_left(self.buckets, value)
        if index < len(self.buckets):
            child.counts[index] += 1
        child.sum += value
        child.count += 1

    def render(self) -> list[str]:
        lines = self.header()
        for key, child in sorted(self._children.items()):
            cumulative = 0
            for bound, count in zip(self.buckets, child.counts, strict=True):
                cumulative += count
                le = f'le="{format_value(bound)}"'
                labels = _labels_text(self.labelnames, key, le)
                lines.append(f"{self.name}_bucket{labels} {cumulative}")
            inf = _labels_text(self.labelnames, key, 'le="+Inf"')
            lines.append(f"{self.name}_bucket{inf} {child.count}")
            plain = _labels_text(self.labelnames, key)
            lines.append(f"{self.name}_sum{plain} {format_value(child.sum)}")
            lines.append(f"{self.name}_count{plain} {child.count}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _register(self, metric: _Metric) -> _Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} already registered")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._register(Counter(name, documentation, labelnames))  # type: ignore[return-value]

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._register(Gauge(name, documentation, labelnames))  # type: ignore[return-value]

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        return self._register(Histogram(name, documentation, labelnames, buckets))  # type: ignore[return-value]

    def get(self, name: str) -> _Metric:
        return self._metrics[name]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
