"""Issue 25, items 1-4: the steal mask over both cores (exact left-out sets on a synthetic
timeline), its wide and placebo variants, the withheld reasons, the server probe's parser and
summary, the per-host steal accounting, and the window CPU of the pinned cores."""

import json

import numpy as np

from cnibench.workload import latency as lat
from cnibench.workload import stealacct
from cnibench.workload import stealprobe as sp
from cnibench.workload.generators import openloop as ol
from cnibench.workload.windowcpu import instructions_support, parse_perf_count, role_cpu, window_cpu

from test_workload_openloop import log_rows, spec, summary

MS = 1_000_000
PARAVIRT = {"client": "paravirt", "server": "paravirt"}


def test_the_mask_over_both_cores_leaves_out_exactly_the_union_of_their_widened_episodes():
    """Requests every 0.5 ms over 100 ms. Client: a 3 ms episode at 10-13 ms (S = 3 ms: D = 3 ms).
    Server: 0.5 ms stolen at 40-41 ms (D = 2 ms) and one overlapping the client's (12-14 ms,
    S = 1 ms). Left out: intended in [9, 16] (client), [11, 16] (server, inside it), [39, 43]."""
    intended = np.arange(0, 100 * MS, MS // 2, dtype=np.int64)
    by_core = {"client": [(10 * MS, 13 * MS, 3 * MS)], "server": [(40 * MS, 41 * MS, MS // 2), (12 * MS, 14 * MS, MS)]}
    main, lead, tail = lat.mask_variants(by_core, 0, 100 * MS, seed=3)["main"]
    mask = lat.steal_mask(intended, main, lead, tail)
    want = ((intended >= 9 * MS) & (intended <= 16 * MS)) | ((intended >= 39 * MS) & (intended <= 43 * MS))
    assert (mask == want).all() and mask.sum() == 15 + 9
    only_client = lat.steal_mask(intended, by_core["client"])
    assert only_client.sum() == 15  # the server's core adds exactly its own episodes


def test_the_wide_mask_doubles_the_lead_and_the_tail():
    intended = np.arange(0, 100 * MS, MS // 2, dtype=np.int64)
    by_core = {"client": [(10 * MS, 13 * MS, 3 * MS)], "server": [(40 * MS, 41 * MS, MS // 2)]}
    eps, lead, tail = lat.mask_variants(by_core, 0, 100 * MS, seed=3)["wide"]
    mask = lat.steal_mask(intended, eps, lead, tail)
    want = ((intended >= 8 * MS) & (intended <= 19 * MS)) | ((intended >= 38 * MS) & (intended <= 45 * MS))
    assert (mask == want).all() and lead == 2 * lat.MASK_LEAD_NS and lat.tail_rule(2) == "max(4 ms, 2xS)"


def test_the_placebo_keeps_count_and_lengths_moves_them_inside_the_window_and_is_seeded():
    by_core = {"client": [(10 * MS, 13 * MS, 3 * MS)], "server": [(40 * MS, 41 * MS, MS // 2), (60 * MS, 60 * MS + 1, 1)]}
    a = lat.mask_variants(by_core, 5 * MS, 105 * MS, seed=7)["placebo"][0]
    b = lat.mask_variants(by_core, 5 * MS, 105 * MS, seed=7)["placebo"][0]
    c = lat.mask_variants(by_core, 5 * MS, 105 * MS, seed=8)["placebo"][0]
    assert a == b and a != c
    assert sorted((e - s, st) for s, e, st in a) == sorted((e - s, st) for eps in by_core.values() for s, e, st in eps)
    assert all(5 * MS <= s and e <= 105 * MS for s, e, _ in a)


def ctx(server=None, accounting=PARAVIRT, note=None):
    return {"server": server, "server_note": note, "accounting": accounting, "accounting_reasons": {}}


def test_the_record_masks_both_cores_and_says_which_it_saw():
    """The log path: a client stall at 1.5 s and a server episode at 2.0 s (realtime, t0 = 1 ns)."""
    rows = log_rows(n=2000, rate=1000.0)
    rows["done"][1000:1003] += 5_000_000  # slow requests due in the server's episode
    s = summary(version="5", stalls=[[0, 1_500_000_000, 1_505_000_000, 5_000_000, 0, 0]], intervals=[], short_ns=20000)
    server = [[1 + 2_000_000_000, 1 + 2_001_000_000, 1_000_000]]
    r = ol.result_from_log(spec(), rows, s, ctx(server))
    o = r.outside_steal
    assert o["episodes"] == {"client": 1, "server": 1} and o["cores"] == ["client", "server"] and o["withheld"] is None
    assert o["left_out"] == (1 + 5 + 5 + 1) + (1 + 1 + 2 + 1)  # [1.499, 1.510] s and [1.999, 2.003] s, 1 ms apart
    assert o["histogram"].get_max_value() < 1000 < r.histogram.get_max_value()
    assert o["wide"]["left_out"] > o["left_out"] and o["wide"]["tail_rule"] == "max(4 ms, 2xS)"
    assert o["placebo"]["episodes"] == o["episodes"] and o["placebo"]["withheld"] is None
    files = {"steal_context": json.dumps(ctx(server)).encode()}
    assert ol.steal_context(files) == ctx(server) and ol.steal_context({"steal_context": b"not json"}) == {}


def test_the_conditional_figures_are_withheld_with_the_reason():
    s = summary(version="5", stalls=[], intervals=[], short_ns=20000)
    rows = log_rows(n=2000, rate=1000.0)
    unpinned = ol.result_from_log(spec(), rows, s, ctx(None, note="nginx is not pinned: no core of its to observe"))
    assert unpinned.outside_steal["cores"] == ["client"]
    assert unpinned.outside_steal["withheld"] == "the server's core was not observed: nginx is not pinned: no core of its to observe"
    unknown = ol.result_from_log(spec(), rows, s, ctx([], accounting={"client": "paravirt", "server": "unknown"}))
    assert unknown.outside_steal["withheld"].startswith("the server core's steal split is unknown")
    assert ol.result_from_log(spec(), rows, s).outside_steal["withheld"].startswith("the client core's steal split")


PROBE = """stealprobe 1
interval_us 1000
late_us 200
cpu 1
sched fifo
schedstat 1
t0_realtime_ns 1000000000
t0_mono_ns 5
samples 2012
span_ns 2359566080
cpu_ns 63252000
exec_ns 52000000
offcpu steal 2 764499
offcpu preempted 1 295065930
offcpu own 0 0
offcpu stopped 1 52604490
ep 995000000 1048604490 52604490 0 3
ep 1558000000 1853007643 294007643 29559 1
ep 2004000000 2005533914 533914 533914 0
ep 2005533914 2005763000 229086 229086 0
dropped 0
end
"""


def test_the_probe_parser_reads_a_summary_and_refuses_anything_else():
    p = sp.parse(PROBE)
    assert p["interval_us"] == 1000 and p["sched"] == "fifo" and p["exec_ns"] == 52_000_000
    assert p["offcpu"]["stopped"] == [1, 52604490] and len(p["episodes"]) == 4 and p["episodes"][0][4] == 3
    assert sp.parse(PROBE.replace("end\n", "")) is None and sp.parse("") is None
    assert sp.parse(PROBE.replace("ep 995000000", "ep x")) is None
    assert "sched" not in sp.parse(PROBE.replace("sched fifo", "sched $(reboot)"))  # only the two names


def test_the_probe_summary_is_compact_and_counts_steal_only():
    p = sp.parse(PROBE)
    s = sp.summary([p], [1])
    assert s["cpus"] == [1] and s["resolution_us"] == 1000 and s["probe_cpu_s"] == 0.052  # exact exec time
    assert s["steal_s"] == round((29559 + 533914 + 229086) / 1e9, 6)
    assert s["episodes"] == [[1558000, 295007], [2004000, 1533], [2005533, 229]]  # the stop is no steal
    assert s["offcpu_by_cause"]["stopped"] == 0.052604 and s["window_s"] == 2.36
    assert sp.steal_spans_realtime(p)[1] == (1_000_000_000 + 2004000000, 1_000_000_000 + 2005533914, 533914)
    assert sp.summary([], [1])["steal_s"] is None
    assert sp.probe_argv("/bin/p", 3) == ["taskset", "-c", "3", "/bin/p", str(sp.INTERVAL_US), str(sp.LATE_US)]


def test_steal_accounting_from_the_kernel_config():
    yes = "source /proc/config.gz\n# CONFIG_IRQ_TIME_ACCOUNTING is not set\nCONFIG_PARAVIRT_TIME_ACCOUNTING=y\n"
    assert stealacct.parse_probe(yes) == {"accounting": "paravirt", "source": "/proc/config.gz", "irq_time": False,
                                          "reason": None}
    no = stealacct.parse_probe("source /boot/config-6\n# CONFIG_PARAVIRT_TIME_ACCOUNTING is not set\n")
    assert no["accounting"] == "unknown" and "is not set" in no["reason"]
    assert stealacct.parse_probe("source none\n")["reason"].startswith("no kernel config")
    assert stealacct.per_role(None, None)["server"]["accounting"] == "unknown"


def sample(t, cpus):
    return {"uptime": t, "stat": {"cpus": {f"cpu{c}": dict(v) for c, v in cpus.items()}}}


def test_window_cpu_is_the_pinned_cores_over_the_window_only():
    """Samples at 0, 1, 2, 3 s; the window is the last 2.5 s (from 0.5 s, interpolated)."""
    z = {"user": 0, "nice": 0, "system": 0, "idle": 0, "iowait": 0, "irq": 0, "softirq": 0, "steal": 0}
    ss = [sample(t, {0: {**z, "user": 100 * t, "softirq": 10 * t}, 1: {**z, "idle": 100 * t, "steal": 2 * t}})
          for t in (0.0, 1.0, 2.0, 3.0)]
    c = role_cpu(ss, [0], 2.5)
    assert c == {"cpus": [0], "span_s": 2.5, "user_s": 2.5, "system_s": 0.0, "softirq_s": 0.25, "irq_s": 0.0,
                 "steal_s": 0.0, "idle_s": 0.0}
    w = window_cpu({"h": ss}, {"client": ("h", [0]), "server": ("h", [1])}, 2.5)
    assert w["server"]["idle_s"] == 2.5 and w["server"]["steal_s"] == 0.05
    assert window_cpu({}, {"client": ("h", [0])}, 2.5) == {"client": None}


def test_instructions_only_where_perf_counts_them():
    assert instructions_support("<not supported>,,instructions,0,100.00,,\n", 0)[0] is False
    assert "not installed" in instructions_support("", 127)[1]
    assert instructions_support("1234567,,instructions,1000,100.00,,\n", 0) == (True, None)
    assert parse_perf_count("  12,,instructions:u,1,100,,") == 12


def test_the_run_gives_the_parser_the_server_episodes_and_the_record_its_parts():
    """stealrun.RunSteal after its probes stopped: the steal context the parser reads (realtime
    spans with steal only) and the record's hygiene.server_probe and metrics parts."""
    from types import SimpleNamespace

    from cnibench.workload.bench import BenchSpec
    from cnibench.workload.stealrun import RunSteal

    fleet = SimpleNamespace(client=SimpleNamespace(name="client"), server=SimpleNamespace(name="server"))
    steal = RunSteal(fleet, BenchSpec(mode="host", size="small", rate=1000, duration_s=2.5, warmup_s=0.5), {})
    steal.summaries = [sp.parse(PROBE)]
    steal.accounting = stealacct.per_role(stealacct.parse_probe("source x\nCONFIG_PARAVIRT_TIME_ACCOUNTING=y\n"), None)
    ctx = ol.steal_context({"steal_context": steal.context_bytes()})
    assert ctx["server"] == [[1_000_000_000 + s, 1_000_000_000 + e, st] for s, e, _, st, c in sp.parse(PROBE)["episodes"]
                             if st > 0]
    assert ctx["accounting"] == {"client": "paravirt", "server": "unknown"} and ctx["accounting_reasons"]["server"]
    part = steal.server_probe()
    assert part["cpus"] == [1] and part["steal_accounting"]["client"]["accounting"] == "paravirt"
    m = steal.metrics_part({})
    assert m["window_cpu"] == {"client": None, "server": None} and m["instructions"]["supported"] is None
