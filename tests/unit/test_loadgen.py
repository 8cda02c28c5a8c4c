import pytest

from bench.loadgen import due, lost_messages, percentile, sequence_of


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 51) == 3.0
    assert percentile([7.5], 99) == 7.5


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        percentile([], 50)


def test_lost_messages_sums_what_each_client_missed():
    acknowledged = {1, 2, 3, 4}
    assert lost_messages(acknowledged, []) == 0
    assert lost_messages(acknowledged, [{1, 2, 3, 4}, {1, 2, 3, 4}]) == 0
    assert lost_messages(acknowledged, [{1, 2}, {4}, set()]) == 2 + 3 + 4
    # A message stored although its post failed is received but never expected.
    assert lost_messages({1, 3}, [{1, 2, 3}]) == 0


def test_due_follows_an_open_loop_schedule():
    assert due(-0.1, 50) == 0
    assert due(0.0, 50) == 1
    assert due(0.0199, 50) == 1
    assert due(0.02, 50) == 2
    assert due(1.0, 50) == 51
    # A late wake-up owes every start it missed, not one more.
    assert due(2.5, 2) == 6


def test_sequence_of_reads_only_the_publishers_texts():
    assert sequence_of("load 17") == 17
    assert sequence_of("hello 17") is None
    assert sequence_of("load x") is None
    assert sequence_of("load") is None


def test_only_the_keepalive_race_is_retried():
    import errno

    import aiohttp

    from bench.loadgen import closed_by_server

    assert closed_by_server(aiohttp.ServerDisconnectedError())
    assert closed_by_server(aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"))
    assert closed_by_server(aiohttp.ClientOSError(errno.EPIPE, "Broken pipe"))
    assert closed_by_server(aiohttp.ClientOSError(1, "[SSL: APPLICATION_DATA_AFTER_CLOSE_NOTIFY]"))
    refused = aiohttp.ClientConnectorError(None, OSError(errno.ECONNREFUSED, "refused"))
    assert not closed_by_server(refused)  # the server is down: a failed request
    assert not closed_by_server(TimeoutError())
