"""The gRPC load's accounting (bench.grpc_load): h2load sees HTTP, so a failed call (HTTP 200, an error
status in the trailers, no message) must be found from the answers' bytes."""

import pytest

from bench.grpc_load import count_answers, parse_summary
from bench.wrk import WrkError

# h2load 1.52's summary of 300 ModelInfer calls for an unknown model against the service: every call
# answered HTTP 200 with grpc-status NOT_FOUND and no message.
FAILED_CALLS = """\
finished in 37.89ms, 7917.87 req/s, 843.49KB/s
requests: 300 total, 300 started, 300 done, 300 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 300 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 31.96KB (32726) total, 25.82KB (26444) headers (space savings 33.22%), 0B (0) data
                     min         max         mean         sd        +/- sd
time for request:      248us      7.24ms      1.95ms      1.26ms    94.33%
"""
# The same calls for fashion_cnn over 10 s: each answered with its 90-byte message.
GOOD_CALLS = """\
finished in 10.00s, 4209.50 req/s, 572.81KB/s
requests: 42095 total, 42159 started, 42095 done, 42095 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 42095 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 5.59MB (5865597) total, 123.40KB (126360) headers (space savings 96.29%), 3.61MB (3788550) data
"""


def test_the_summary_is_read_in_any_duration_unit():
    assert parse_summary(GOOD_CALLS) == {"seconds": 10.0, "done": 42095, "succeeded": 42095, "data_bytes": 3788550}
    assert parse_summary(FAILED_CALLS)["seconds"] == pytest.approx(0.03789)
    assert parse_summary(GOOD_CALLS.replace("10.00s", "850us"))["seconds"] == pytest.approx(0.00085)


def test_calls_count_as_answered_by_their_messages_only():
    assert count_answers(parse_summary(GOOD_CALLS), 90) == (42095, {})
    assert count_answers(parse_summary(FAILED_CALLS), 90) == (0, {"grpc": 300})
    one_failed = {"seconds": 1.0, "done": 10, "succeeded": 10, "data_bytes": 9 * 90}
    assert count_answers(one_failed, 90) == (9, {"grpc": 1})
    not_2xx = {"seconds": 1.0, "done": 10, "succeeded": 8, "data_bytes": 8 * 90}
    assert count_answers(not_2xx, 90) == (8, {"http": 2})


def test_an_answer_of_another_size_is_an_error():
    assert count_answers({"seconds": 1.0, "done": 10, "succeeded": 10, "data_bytes": 9 * 90 + 45}, 90)[1] == {
        "grpc": 1,
        "answer size": 1,
    }
    assert count_answers({"seconds": 1.0, "done": 10, "succeeded": 10, "data_bytes": 11 * 90}, 90)[1] == {
        "answer size": 1
    }


def test_a_summary_without_its_figures_is_refused():
    with pytest.raises(WrkError, match="no 'data_bytes'"):
        parse_summary(GOOD_CALLS.replace("(3788550) data", ""))
