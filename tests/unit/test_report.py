"""report.py: tables in the study's format, and a self-contained report a real browser renders."""

import re
import shutil
import subprocess

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from cnibench import report, synthetic  # noqa: E402

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


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("study")
    synthetic.write_study(base / "raw", modes=("host", "flannel-vxlan", "ipvlan"), loads=(0.3, 0.4, 0.5),
                          reps=3, seed=4, duration_s=5, invalid_fraction=0.1, failed_fraction=0.05)
    path = report.build_all("synthetic", base / "raw", base / "rep", base / "proc", base / "fig", n_boot=200)
    return base, path


def test_build_all_writes_report_tables_and_processed_data(built):
    base, path = built
    assert path == base / "rep" / "report.html"
    for name in ("headline", "study_table"):
        for ext in ("csv", "md", "html"):
            assert (base / "rep" / "tables" / f"{name}.{ext}").stat().st_size > 0
    assert (base / "proc" / "runs.parquet").exists() and (base / "proc" / "stats_headline.csv").exists()
    assert len(list((base / "fig").glob("*.png"))) == 7


def test_study_table_format(built):
    base, _ = built
    t = pd.read_csv(base / "rep" / "tables" / "study_table.csv")
    assert list(t.columns[-6:]) == ["p95", "p99", "p99.5", "p99.99", "p99.999", "max"]
    assert len(t) == 2 * 3 * 3  # sizes x loads x modes
    vals = t[["p95", "p99", "p99.5", "p99.99", "p99.999", "max"]].to_numpy()
    assert (vals[:, 1:] >= vals[:, :-1]).all()  # percentiles are ordered
    assert 0.1 < vals[0, 0] < 5  # milliseconds, not microseconds


def test_report_is_self_contained_and_honest(built):
    _, path = built
    text = path.read_text()
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", text)  # nothing fetched from outside
    assert "share that machine's CPUs" in text and "excluded" in text
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
