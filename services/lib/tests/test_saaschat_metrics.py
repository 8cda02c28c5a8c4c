import pytest

from saaschat.metrics import Registry, escape_label_value, format_value


def test_counter_and_gauge_rendering():
    registry = Registry()
    requests = registry.counter("http_requests_total", "Requests.", ("route", "status"))
    requests.inc(route="/a", status=200)
    requests.inc(2, route="/a", status=200)
    requests.inc(route="/b", status=503)
    up = registry.gauge("dependency_up", "Up.", ("dependency",))
    up.set(1, dependency="postgresql")
    registry.counter("jobs_total", "Jobs.")
    text = registry.render()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert "# HELP http_requests_total Requests." in lines
    assert "# TYPE http_requests_total counter" in lines
    assert 'http_requests_total{route="/a",status="200"} 3' in lines
    assert 'http_requests_total{route="/b",status="503"} 1' in lines
    assert "# TYPE dependency_up gauge" in lines
    assert 'dependency_up{dependency="postgresql"} 1' in lines
    assert "jobs_total 0" in lines  # unlabelled counters are exposed from the start


def test_histogram_buckets_are_cumulative():
    registry = Registry()
    hist = registry.histogram("d_seconds", "Duration.", ("route",), buckets=(0.1, 1))
    for value in (0.05, 0.5, 0.7, 3):
        hist.observe(value, route="/x")
    lines = registry.render().splitlines()
    assert 'd_seconds_bucket{route="/x",le="0.1"} 1' in lines
    assert 'd_seconds_bucket{route="/x",le="1"} 3' in lines
    assert 'd_seconds_bucket{route="/x",le="+Inf"} 4' in lines
    assert 'd_seconds_count{route="/x"} 4' in lines
    assert 'd_seconds_sum{route="/x"} 4.25' in lines


def test_escaping_and_values():
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert format_value(float("inf")) == "+Inf"
    assert format_value(2.0) == "2"
    assert format_value(0.25) == "0.25"


def test_invalid_use_is_rejected():
    registry = Registry()
    counter = registry.counter("c_total", "C.", ("a",))
    with pytest.raises(ValueError):
        counter.inc(b="x")
    with pytest.raises(ValueError):
        counter.inc(-1, a="x")
    with pytest.raises(ValueError):
        registry.counter("c_total", "again")
    with pytest.raises(ValueError):
        registry.gauge("bad-name", "x")
