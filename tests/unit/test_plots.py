"""plots.py: every figure is drawn, saved in three formats, and modes keep their colours."""

import matplotlib
import pytest

matplotlib.use("Agg")

from cnibench.analysis import dataset, plots, stats, synthetic  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    synthetic.write_study(raw, modes=("host", "flannel-vxlan", "ipvlan"), loads=(0.3, 0.5, 0.7),
                          reps=3, seed=1, duration_s=5, failed_fraction=0.1)
    ds = dataset.build("synthetic", raw)
    return ds, stats.analyze(ds)


def test_palette_is_fixed_distinct_and_complete():
    assert list(plots.COLOURS) == list(dataset.MODES)
    assert len(set(plots.COLOURS.values())) == len(dataset.MODES)
    assert len(set(plots.MARKERS.values())) == len(dataset.MODES)
    assert plots.colour("host") == "#000000"
    # a tenth arm and more get colours of their own, stable, never a mode's or a grey
    extra = [plots.colour(f"arm-{i}") for i in range(6)]
    assert len(set(extra)) == 6 and not set(extra) & set(plots.COLOURS.values())
    assert all(len({c[1:3], c[3:5], c[5:7]}) > 1 for c in extra) and plots.colour("arm-0") == extra[0]
    assert plots.colour("host·A/A") == plots.TWIN_COLOUR not in plots.COLOURS.values()


def test_tail_axis_spreads_the_tail():
    x = plots.tail_x([90, 99, 99.9])
    assert x == pytest.approx([1, 2, 3])
    ps = plots.tail_percentiles(85, 99.999, 10)
    assert ps[0] == pytest.approx(85) and ps[-1] == pytest.approx(99.999)


def test_make_all_writes_every_figure_in_three_formats(study, tmp_path):
    ds, an = study
    out = plots.make_all(ds, an, tmp_path)
    assert set(out) == {"latency_by_percentile_small", "latency_by_percentile_large", "latency_vs_load",
                        "overhead_vs_host", "max_rate", "cpu_per_request_small", "cpu_per_request_large"}
    for paths in out.values():
        assert set(paths) == {"pdf", "svg", "png"}
        assert paths["pdf"].read_bytes()[:4] == b"%PDF"
        assert b"<svg" in paths["svg"].read_bytes()[:2000]
        png = paths["png"].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width = int.from_bytes(png[16:20], "big")
        assert width > 1500  # 300 dpi, not screen resolution


def test_lines_use_the_mode_colour(study):
    ds, _ = study
    fig = plots.latency_by_percentile(ds, "small", modes=["ipvlan"])
    colours = {matplotlib.colors.to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()}
    assert colours == {plots.COLOURS["ipvlan"].lower()}
    matplotlib.pyplot.close(fig)


def test_max_rate_shows_measured_maxima_only(study, tmp_path):
    ds, an = study
    rates, source = plots.max_rates(ds)
    assert source["small"]["host"] == "calibrated" and rates["small"]["host"] == 100_000.0
    bare = dataset.Dataset(ds.study, ds.runs, ds.hist)
    assert plots.max_rates(bare) == ({}, {})  # the highest rate tested is not a maximum
    only_ref = dataset.Dataset(ds.study, ds.runs, ds.hist, calibration={"host": ds.calibration["host"]})
    assert "max_rate" not in plots.make_all(only_ref, an, tmp_path)  # nothing to compare: left out
