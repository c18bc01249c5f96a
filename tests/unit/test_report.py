"""report.py: tables in the study's format, and a self-contained report a real browser renders."""

import json
import re
import shutil
import subprocess

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from cnibench.analysis import dataset, report, stats, synthetic  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const head = document.getElementById('headline-table');
  const rows = head ? head.querySelectorAll('tbody tr').length : -1;
  const d = document.createElement('div'); d.id = 'cnib-check';
  d.textContent = `images=${imgs.length} loaded=${ok} headline_rows=${rows}`;
  document.body.appendChild(d);
});</script></body>"""


def _mark_invalid(path):
    rec = json.loads(path.read_text())
    rec.update(status="invalid", reason="invalid: achieved 93% of target")
    path.write_text(json.dumps(rec))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("study")
    paths = synthetic.write_study(base / "raw", modes=("host", "flannel-vxlan", "ipvlan"), loads=(0.3, 0.4, 0.5),
                                  reps=3, seed=4, duration_s=5, invalid_fraction=0.1, failed_fraction=0.05)
    _mark_invalid(next(p for p in paths if "/flannel-vxlan/small/" in str(p)))
    path = report.build_all("synthetic", base / "raw", base / "rep", base / "proc", base / "fig")
    return base, path


def test_build_all_writes_report_tables_and_processed_data(built):
    base, path = built
    assert path == base / "rep" / "report.html"
    for name in ("headline", "study_table"):
        for ext in ("csv", "md", "html"):
            assert (base / "rep" / "tables" / f"{name}.{ext}").stat().st_size > 0
    assert (base / "proc" / "runs.parquet").exists() and (base / "proc" / "stats_headline.csv").exists()
    assert len(list((base / "fig").glob("*.png"))) == 7
    # run-all ends with the report's first paragraph (3 blocks: too few pairs for any verdict)
    answer = report.answer_of("synthetic", base / "rep")
    assert answer.startswith("Study synthetic") and answer in path.read_text().replace("&#x27;", "'")
    assert "cannot separate" not in answer and "too few pairs" in answer


def test_study_table_format(built):
    base, _ = built
    t = pd.read_csv(base / "rep" / "tables" / "study_table.csv")
    assert list(t.columns[-6:]) == ["p95", "p99", "p99.5", "p99.99", "p99.999", "max"]
    assert len(t) == 2 * 3 * 3  # sizes x loads x modes
    ok = t["status"] == "ok"
    vals = t.loc[ok, ["p95", "p99", "p99.5", "p99.99", "p99.999", "max"]].to_numpy()
    assert (vals[:, 1:] >= vals[:, :-1]).all()  # percentiles are ordered
    assert 0.1 < vals[0, 0] < 5  # milliseconds, not microseconds
    # a cell with an invalid run (no redo) is "not sustained" and has no numbers
    bad = t[~ok & t["status"].str.startswith("not sustained")]
    assert len(bad) and bad[["p95", "p99", "max"]].isna().all().all()


def test_report_is_self_contained_and_honest(built):
    _, path = built
    text = path.read_text()
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", text)  # nothing fetched from outside
    assert "share that machine's CPUs" in text and "excluded" in text
    assert "id='seed-2016'" in text and "IPvlan had the lowest latency" in text
    assert "bootstrap" not in text.split("<h2 id='method'>")[0]  # the headline says how it is computed
    n_excluded = int(re.search(r"<b>(\d+) invalid or failed runs", text).group(1))
    assert n_excluded > 0


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (CI installs Debian's chromium)")
def test_report_renders_in_headless_chromium(built, tmp_path):
    _, path = built
    page = tmp_path / "report.html"
    page.write_text(path.read_text().replace("</body>", CHECK, 1))
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"images=(\d+) loaded=(\d+) headline_rows=(-?\d+)", dom)
    assert m, "the check script did not run"
    images, loaded, rows = map(int, m.groups())
    assert images == 7 and loaded == images
    assert rows == 2 * 2  # two sizes x two non-reference modes


def test_report_compares_with_a_study_of_the_same_design(tmp_path):
    """Two synthetic studies of the same design: the second one's report puts the first beside it."""
    ans = {}
    for name, seed in (("first", 1), ("second", 2)):
        synthetic.write_study(tmp_path / "raw", study=name, modes=("host", "flannel-vxlan"), sizes=("small",),
                              loads=(0.3, 0.5), reps=6, seed=seed, duration_s=3)
        ds = dataset.build(name, tmp_path / "raw")
        ans[name] = (ds, report.analyse(ds))
        stats.save(ans[name][1], tmp_path / "proc" / name)
    ds, an = ans["second"]
    other, table = report.repeatability("second", an, tmp_path / "proc")
    assert other == "first" and set(table["b"]) == {"second"} and table["agree"].notna().all()
    text = report.render(ds, an, {}, {"headline": report.headline_table(an), "study_table": report.study_table(ds),
                                      "repeatability": table})
    assert "id='repeatability'" in text and "Beside study <code>first</code>" in text
