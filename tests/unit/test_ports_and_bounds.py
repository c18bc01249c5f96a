"""Issue 27: more connections (the client namespace's port range widened for a run, journalled
and restored; the open-file limit the generator raises), the sampled log's N, and bad input
beyond the bounds refused with one message before anything starts."""

import pytest

from cnibench.errors import ConfigError
from cnibench.infra import limits as host_limits
from cnibench.workload import defaults, ports
from cnibench.workload.bench import BenchSpec, HostLimits, load_spec, validate_spec


def spec(**kw):
    base = dict(mode="host", size="small", rate=5000.0, duration_s=2.0, warmup_s=0.5)
    base.update(kw)
    return BenchSpec(**base)


def test_one_wide_range_for_python_and_the_host_checks():
    assert ports.ports_in(defaults.PORT_RANGE_WIDE) == defaults.MAX_CONNECTIONS == host_limits.WIDE_PORTS == 64512
    assert not ports.needs_widening(28232) and ports.needs_widening(28233)


class Ep:
    connect_address, connect_port = "198.18.0.12", 8080


def test_the_sampled_log_keeps_at_most_100000_requests():
    assert defaults.sampled_log_every(5000, 20) == 1 and defaults.sampled_log_every(25000, 4) == 1
    assert defaults.sampled_log_every(40000, 60) == 24 and defaults.sampled_log_every(450000, 60) == 270
    assert load_spec(spec(), Ep(), "/g").log_every == 1 and load_spec(spec(), Ep(), "/g").hist_path == "/g/histograms"
    assert load_spec(spec(rate=40000.0, duration_s=60.0), Ep(), "/g").log_every == 24
    assert load_spec(spec(openloop_log_every=0), Ep(), "/g").log_every == 0
    assert load_spec(spec(openloop_histograms=False), Ep(), "/g").hist_path == ""


@pytest.mark.parametrize("kw, key, words", [
    (dict(threads=257, connections=300), "threads", "more than 256"),
    (dict(pipeline=65537), "pipeline", "more than 65536"),
    (dict(connections=64513, rate=1e6), "connections", "several server ports are not supported"),
    (dict(openloop_log_every=-1), "openloop_log_every", "between 0 and"),
    (dict(openloop_log_every=10**10), "openloop_log_every", "between 0 and"),
])
def test_beyond_the_bounds_is_one_clear_error(kw, key, words):
    with pytest.raises(ConfigError) as e:
        validate_spec(spec(**kw))
    assert e.value.key == key and words in str(e.value), str(e.value)


def test_60000_connections_pass_with_a_hard_limit_that_holds_them_and_are_refused_without():
    big = spec(connections=60000, rate=60000.0)
    validate_spec(big)  # within the bounds: the range is widened for the run
    enough = HostLimits(nofile_client=1024, nofile_client_hard=1048576)
    validate_spec(big, enough)  # cnib-openloop raises its soft limit to the hard one
    with pytest.raises(ConfigError, match="60,064 open files; the hard limit is 20,000"):
        validate_spec(big, HostLimits(nofile_client=1024, nofile_client_hard=20000))
    with pytest.raises(ConfigError, match="open-file limit"):  # h2load does not raise its own
        validate_spec(spec(connections=2000, generator="h2load"), enough)


def test_the_host_checks_count_the_sampled_log_the_workload_keeps():
    assert host_limits.LOG_KEPT == defaults.LOG_SAMPLE_MAX


def test_journalled_namespaces_takes_only_plain_names():
    from cnibench.workload.ports import journalled_namespaces

    listing = "port-range.host.orig\nport-range.cnib-client-pod.orig\nworkload\nport-range.$(reboot).orig\n"
    assert journalled_namespaces(listing) == [None, "cnib-client-pod"]
    assert journalled_namespaces("") == []
