"""The study's deliverables: tables in the study's format and one self-contained HTML report.

`build_all` is the one entry point the pipeline (and `invoke report`) calls:
raw records -> dataset -> statistics -> figures -> tables -> reports/<study>/report.html.
Figures are embedded as data URIs, so the report is a single file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from . import compare, conditional, cpucost, dataset, histquant, lead, pairs, plots, provenance, sections, stats
from .tables import to_html, to_markdown  # noqa: F401  (re-exported: tasks, notebooks)
from ..infra import config
from .dataset import REFERENCE, Dataset, order_modes
from ..errors import CnibenchError

STUDY_PERCENTILES = (95.0, 99.0, 99.5, 99.99, 99.999)  # the study's table, plus the maximum
TABLE_COLUMNS = [f"p{p:g}" for p in STUDY_PERCENTILES] + ["max"]
FIGURE_CAPTIONS = {
    "latency_by_percentile": "Latency by percentile (the study's figure): a panel per load, a line per mode.",
    "latency_vs_load": "p50, p99 and p99.9 of a typical run against load, 95 % CI bands over repetitions; shaded: "
                       "30–50 % of max.",
    "overhead_vs_host": "Overhead versus host over the 30–50 % band: latency ratio with 95 % CI (the study's "
                        "estimator, above).",
    "max_rate": "Maximum sustainable request rate per calibrated mode (measured maxima only).",
    "cpu_per_request": "CPU time per request by kind against load, on the client's and the server's pinned cores "
                       "(records made before issue 25: every CPU of the machine).",
}


def study_table(ds: Dataset) -> pd.DataFrame:
    """Per size x load x mode: the study's percentiles and the maximum, in ms (pooled runs).
    A cell with a run that ended invalid and was not redone is "not sustained", without numbers."""
    rows = []
    att = stats.attempts(stats.run_values(ds, ()))
    for (size, rate), g in att.groupby(["size", "target_rate"]):
        for mode in order_modes(g["mode"].unique()):
            cell = g[g["mode"] == mode]
            ids = cell.loc[cell["state"] == "ok", "run_id"]
            ns = int((cell["state"] == stats.NOT_SUSTAINED).sum())
            lf = cell["load_fraction"].median()
            row = {"size": size, "rate_rps": rate, "load_pct": lf * 100 if pd.notna(lf) else np.nan, "mode": mode,
                   "runs": len(ids), "status": f"{stats.NOT_SUSTAINED} ({ns} of {len(cell)})" if ns else "ok"}
            if not ns:
                q = histquant.pooled_quantiles([ds.hist[r] for r in ids if r in ds.hist], STUDY_PERCENTILES) / 1000.0
                mx = max((float(ds.hist[r][1][-1] - 1) for r in ids if r in ds.hist), default=np.nan) / 1000.0
                row.update(zip(TABLE_COLUMNS, [*q, mx]))
            rows.append(row)
    df = pd.DataFrame(rows, columns=["size", "rate_rps", "load_pct", "mode", "runs", "status", *TABLE_COLUMNS])
    return stats.sort_rows(df.rename(columns={"rate_rps": "target_rate"})).rename(columns={"target_rate": "rate_rps"})


def headline_table(an: stats.Analysis, twin: bool = False) -> pd.DataFrame:
    """One row per size x mode (or, twin=True, the reference's A/A twin): per percentile the
    overhead vs the reference over the band with its 95 % CI ("—" with the reason when it cannot
    be estimated), the minimum detectable effect (80 % power) and the verdict."""
    rows = []
    h = an.headline
    h = h[h["mode"].map(stats.is_twin) == twin] if len(h) else h
    for (size, mode), g in h.groupby(["size", "mode"], sort=False):
        row = {"size": size, "mode": mode}
        for _, r in g.iterrows():
            p = f"p{r['percentile']:g}"
            row[f"{p} overhead"] = lead.interval_text(r)
            row[f"{p} MDE"] = lead.mde_text(r.get("mde_pct")) if pd.notna(r.get("overhead_pct")) else ""
            row[f"{p} verdict"] = r["verdict"]
        rows.append(row)
    return pd.DataFrame(rows)


def study_settings(ds: Dataset) -> dict:
    """The study file's `analysis` settings (equivalence margin, compare_with), found through the
    manifest's study_file, else studies/<name>.yml; {} when neither is readable."""
    from ..study.spec import load_study

    for candidate in (ds.manifest.get("study_file"), ds.study):
        if not candidate:
            continue
        try:
            return load_study(candidate).analysis
        except (CnibenchError, OSError):
            continue
    return {}


def analyse_and_save(ds: Dataset, processed_dir: Path, settings: dict | None = None):
    """(analysis, conditional figures, CPU per request) of a study, saved beside its dataset."""
    settings = study_settings(ds) if settings is None else settings
    an = stats.analyze(ds, margin=settings.get("equivalence_margin", stats.MARGIN))
    cond, cpu = conditional.analyze(ds, an), cpucost.analyze(ds, an)
    stats.save(an, processed_dir)
    conditional.save(cond, processed_dir)
    cpucost.save(cpu, processed_dir)
    return an, cond, cpu


def analyse(ds: Dataset) -> stats.Analysis:
    """stats.analyze with the study file's equivalence margin."""
    return stats.analyze(ds, margin=study_settings(ds).get("equivalence_margin", stats.MARGIN))


def repeatability(study: str, an: stats.Analysis, processed_root: Path,
                  compare_with=None) -> tuple[str, pd.DataFrame] | None:
    """(the other study's name, the side-by-side table) for the first study found to compare
    with (compare.earlier_studies), or None."""
    for path in compare.earlier_studies(study, processed_root, compare_with):
        other = pd.read_csv(Path(path) / "stats_headline.csv")
        name = compare.read_design(path).get("study") or Path(path).name
        return name, compare.compare_headlines(other, an.headline, (name, study))
    return None


def repeatability_measures(study: str, processed_root: Path, compare_with=None) -> pd.DataFrame | None:
    """The same first study as `repeatability`, agreed per measure (compare.compare_measures)."""
    for path in compare.earlier_studies(study, processed_root, compare_with):
        name = compare.read_design(path).get("study") or Path(path).name
        return compare.compare_measures(compare.measures(path), compare.measures(Path(processed_root) / study),
                                        (name, study))
    return None


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(to_markdown(df))
        (out / f"{name}.html").write_text(to_html(df))
        paths[name] = out / f"{name}.csv"
    return paths


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.7em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table.tbl{border-collapse:collapse;font-size:.85em;margin:.6em 0}
table.tbl th,table.tbl td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
table.tbl th{background:#f6f6f6}table.tbl td:nth-child(-n+2){text-align:left}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}.caveat{background:#fff8e1;border-left:4px solid #E69F00;padding:.6em 1em}
details{margin:.6em 0}code,pre{font-size:.85em}pre{background:#f6f6f6;padding:.6em;overflow:auto}
"""


def _esc(s) -> str:
    return html.escape(str(s))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _markdown(text: str) -> str:
    try:
        import mistune
        return mistune.html(text)
    except Exception:  # no renderer: still readable
        return f"<pre>{_esc(text)}</pre>"


def render(ds: Dataset, an: stats.Analysis, figures: dict[str, dict[str, Path]],
           tables: dict[str, pd.DataFrame], method_md: str | None = None, cond=None, cpu=None) -> str:
    """The report as one HTML page, section by section (cond, cpu: issue 25's figures, when made)."""
    parts = _question(ds, an, cond, cpu) + _headline(ds, an, tables)
    parts += sections.conditional_section(cond) + sections.cpu_section(cpu, ds) + sections.redo_section(ds)
    parts += _method(ds.manifest, method_md)
    parts += _figures(figures) + _tables(tables) + _statistics(an, ds) + provenance.provenance(ds)
    parts.append("</body></html>")
    return "\n".join(parts)


def _question(ds: Dataset, an: stats.Analysis, cond=None, cpu=None) -> list[str]:
    lo, hi = an.band
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>cnibench report: {_esc(ds.study)}</title><style>{CSS}</style></head><body>",
             f"<h1>What does a container network cost? — study <code>{_esc(ds.study)}</code></h1>"]
    warn = " caveat" if lead.too_disturbed(lead.disturbance(ds)) else ""
    answer = lead.headline_sentence(ds, an, cond=cond, cpu=cpu)
    parts.append(f"<p id='answer' class='answer{warn}'><b>Answer.</b> {_esc(answer)}</p>")
    parts.append(
        "<h2 id='question'>Question</h2><p>How much latency does each container networking mode add "
        f"compared with no network containerization (<code>{REFERENCE}</code> networking), measured as "
        f"high-percentile latency under a constant request rate, above all at {lo:.0%}–{hi:.0%} of the "
        "maximum load — the study's “most common use of a non-overloaded system”?</p>")
    return parts


def _headline(ds: Dataset, an: stats.Analysis, tables: dict[str, pd.DataFrame]) -> list[str]:
    n_all, n_valid = len(ds.runs), int(ds.runs["valid"].sum()) if len(ds.runs) else 0
    n_excluded = int(an.excluded["runs"].sum()) if not an.excluded.empty else 0
    lo, hi = an.band
    parts = []
    parts.append(f"<h2 id='headline'>Headline: overhead versus {REFERENCE} at {lo:.0%}–{hi:.0%} of max load</h2>")
    if tables["headline"].empty:
        parts.append(f"<p id='headline-table'>No headline: the band has no valid runs of {REFERENCE} and another "
                     "mode.</p>")
    else:
        parts.append(f"<p>{_esc(_estimator_text(an))} Verdict: slower or faster than {REFERENCE} when the test "
                     f"rejects (Holm over the modes), else equivalent when both one-sided tests put it within "
                     f"±{100 * an.margin:.0f} % (TOST, Holm), else inconclusive; “cannot separate (n pairs)” when "
                     "fewer complete pairs than the exact test needs to reach Holm's first step; “not sustained” "
                     "when a run of the mode in the band ended invalid and was not redone, or did not keep up "
                     "with its rate. MDE: the smallest overhead this design detects with 80 % power. “—”: an "
                     "interval that cannot be estimated (too few pairs, or wider than ±1,000 %).</p>")
        parts.append(sections.headline_note(tables["headline"]))
        parts.append(to_html(tables["headline"], table_id="headline-table"))
        parts.append("<p><b>Ordering the data supports</b> (modes in one group cannot be separated):</p><ul>")
        for size, g in an.tiers[an.tiers["percentile"] == 99.0].groupby("size", sort=False):
            groups = " &lt; ".join(f"[{_esc(t)}]" for t in g.sort_values("tier")["text"])
            parts.append(f"<li>{_esc(size)}, p99: {groups}</li>")
        parts.append("</ul>")
    twin = tables.get("twin")
    if twin is not None and not twin.empty:
        parts.append(f"<h3 id='twin'>The study's own false-positive check: {REFERENCE} against its A/A twin</h3>"
                     f"<p>The reference ran twice per repetition under two labels; any separation here is a "
                     "false positive of the method on this machine. The twin is outside the modes' Holm family, "
                     "the tiers and the pairs.</p>" + to_html(twin, table_id="twin-table"))
    parts += _beside(tables, ds.study)
    parts.append(f"<p>Runs: {n_all} recorded, {n_valid} valid and used, <b>{n_excluded} invalid or failed runs "
                 "excluded</b> (listed under Statistics).</p>")
    return parts


def _estimator_text(an: stats.Analysis) -> str:
    n = an.design.get("blocks", "?")
    if an.design.get("estimator", "block-t") == "pooled":
        return (f"Per load, the histograms of the complete pairs of repetition blocks (up to {n}) are merged per "
                "mode; the overhead is the ratio of these pooled quantiles (geometric mean over the band's loads), "
                "tested by an exact within-block label swap over the pairs, the 95 % interval by inverting it.")
    return (f"Per repetition, each mode's latency is compared with the reference's in the same repetition; the "
            f"overhead is the geometric mean of these paired block ratios over the {n} blocks, with a 95 % t-interval.")


def _method(m: dict, method_md: str | None) -> list[str]:
    testbed = provenance.is_testbed(m)
    parts = []
    parts.append("<h2 id='method'>Method</h2>")
    if testbed:
        parts.append("<p class='caveat'><b>Testbed.</b> These results come from the local testbed: the "
                     "“hosts” are network namespaces on one machine, joined by a software switch. Both hosts "
                     "share that machine's CPUs, so the results measure each mode's per-packet CPU cost, "
                     "not a physical network; absolute latencies and rates do not transfer to real "
                     "machines, the ordering of modes by CPU cost per packet does.</p>")
    elif testbed is False:
        parts.append("<p>Hosts: separate machines reached over SSH (see Provenance).</p>")
    else:
        parts.append("<p>The manifest does not say whether these were testbed namespaces or real hosts.</p>")
    if method_md:
        parts.append(_markdown(method_md))
    else:
        parts.append("<p>The client sends requests at a constant rate on persistent connections to Nginx "
                     "serving a fixed-size static file (small: 350 B on the wire; large: 4 KB). Latency is "
                     "recorded in an HdrHistogram (1 µs–100 s, 3 significant digits) over the measurement "
                     "window after a warm-up; runs whose achieved rate falls short of the target are "
                     "marked invalid and excluded. Modes, sizes and loads run in a seeded random order.</p>")
    tools = provenance.tools(m)
    if not tools.empty:
        parts.append("<h3>Hosts, tools and versions</h3>" + to_html(tools))
    parts.append(
        "<h3>Statistics</h3><p>The unit of replication is the repetition block: one mode, set up once, "
        "running its points of one repetition back to back; a pair is a repetition in which both blocks "
        "compared are complete. The band comparisons use the study's estimator (recorded in its design: "
        "“pooled”, ratio of pooled quantiles with an exact label-swap test, or “block-t”, paired t over "
        "block log quantiles). Per load, the quantiles table gives the typical run's quantile "
        "(geometric mean over repetitions) with a t-interval, and the pooled histogram's. Tiers and "
        "pairs of modes use the same rule, Holm over the pairs. Failed runs are excluded and "
        "counted; a cell whose run ended invalid without a valid redo, or did not keep up with its rate, "
        "is shown as not sustained.</p>")
    return parts


def _figures(figures: dict[str, dict[str, Path]]) -> list[str]:
    parts = []
    parts.append("<h2 id='figures'>Figures</h2>")
    for name, paths in figures.items():
        key = next((k for k in FIGURE_CAPTIONS if name.startswith(k)), name)
        suffix = name[len(key):].strip("_")
        caption = FIGURE_CAPTIONS.get(key, name) + (f" ({suffix} responses)" if suffix else "")
        parts.append(f"<figure id='fig-{_esc(name)}'>{_img(paths['png'], caption)}"
                     f"<figcaption>{_esc(caption)} Files: {_esc(name)}.pdf / .svg / .png</figcaption></figure>")
    return parts


def _tables(tables: dict[str, pd.DataFrame]) -> list[str]:
    parts = []
    parts.append("<h2 id='tables'>Latency in the study's format (ms)</h2>"
                 "<p>Pooled valid runs per mode and load; percentiles and maximum in milliseconds.</p>")
    parts.append(to_html(tables["study_table"], table_id="study-table"))
    return parts


def _statistics(an: stats.Analysis, ds: Dataset | None = None) -> list[str]:
    parts = []
    parts.append("<h2 id='statistics'>Statistics</h2>")
    sections = [
        ("Excluded runs (invalid, failed, unreadable)", an.excluded),
        ("Pairs of modes over the band (ratio a/b, 95 % CI, paired t-test and TOST, Holm over pairs)", an.band_pairs),
        (f"Ratio and difference to {REFERENCE} per load (paired by repetition)", an.comparisons),
        ("Quantiles of a typical run with 95 % CIs, and pooled (µs)", an.quantiles),
        ("Block values (µs): per size, mode and repetition, geometric mean over the band's loads", an.blocks),
        *(pairs.section(ds, an) if ds is not None else []),  # a study's declared pairs (analysis/pairs.py)
    ]
    for title, df in sections:
        open_ = " open" if title.startswith("Excluded") else ""
        parts.append(f"<details{open_}><summary>{_esc(title)} — {len(df)} rows</summary>"
                     f"{to_html(df) if not df.empty else '<p>none</p>'}</details>")
    return parts


def headline_of(name_or_path: str, processed_root: Path = config.PROCESSED,
                raw_root: Path = config.RAW) -> tuple[str, pd.DataFrame]:
    """(name, headline) of a study given by name or by its processed directory; a study with raw
    records but no saved analysis is analysed first."""
    path = compare.resolve(name_or_path, processed_root)
    if not (path / "stats_headline.csv").exists():
        name = Path(name_or_path).stem
        if not (Path(raw_root) / name).is_dir():
            raise CnibenchError(f"no analysis of '{name_or_path}' in {path} and no run records in "
                                f"{Path(raw_root) / name}: "
                                "name a study in data/processed, or the processed directory of another clone")
        ds = dataset.build_and_save(name, raw_root, path)
        analyse_and_save(ds, path)
    return compare.read_design(path).get("study") or path.name, pd.read_csv(path / "stats_headline.csv")


def measures_of(name_or_path: str, processed_root: Path = config.PROCESSED, raw_root: Path = config.RAW):
    """(name, compare.measures table) of a study: p50, raw p99, p99 outside steal, CPU per request."""
    name, _ = headline_of(name_or_path, processed_root, raw_root)
    return name, compare.measures(compare.resolve(name_or_path, processed_root))


def _beside(tables: dict, study: str) -> list[str]:
    """The headline beside an earlier study of the same design, and beside the 2016 study."""
    parts = []
    rep = tables.get("repeatability")
    if rep is not None and not rep.empty:
        other = rep["a"].iloc[0]
        parts.append(f"<h3 id='repeatability'>Does it repeat? Beside study <code>{_esc(other)}</code></h3>"
                     f"<p>{_esc(compare.agreement_summary(rep))}. “agree”: the two 95 % intervals overlap; "
                     "difference and p: Welch t-test of the two log ratios.</p>")
        parts.append(to_html(rep, table_id="repeatability-table"))
        by = tables.get("repeatability_measures")
        if by is not None and not by.empty:
            parts.append("<p>Per measure: " + "; ".join(_esc(x) for x in compare.measure_summary(by)) + ".</p>")
    seed = tables.get("seed_2016")
    if seed is not None and not seed.empty:
        parts.append("<h3 id='seed-2016'>The 2016 study beside ours (p99, 30–50 % of max)</h3>"
                     "<p>Each order of modes the 2016 study's conclusions state, and whether this study's "
                     "paired band comparison agrees, disagrees or cannot tell.</p>")
        parts.append(to_html(seed, table_id="seed-table"))
    return parts


def build_all(study: str, raw_dir: Path = config.RAW, out_dir: Path | None = None,
              processed_dir: Path | None = None, figures_dir: Path | None = None) -> Path:
    """dataset -> statistics -> figures -> tables -> report; returns the report's path."""
    out_dir = Path(out_dir or config.REPORTS / study)
    processed_dir = Path(processed_dir or config.PROCESSED / study)
    figures_dir = Path(figures_dir or config.FIGURES / study)
    ds = dataset.build_and_save(study, raw_dir, processed_dir)
    settings = study_settings(ds)
    an, cond, cpu = analyse_and_save(ds, processed_dir, settings)
    figures = plots.make_all(ds, an, figures_dir) if len(ds.valid) else {}
    tables = {"headline": lead.with_conditional_and_cpu(headline_table(an), cond, cpu),
              "twin": lead.with_conditional_and_cpu(headline_table(an, twin=True), cond, cpu),
              "study_table": study_table(ds), "seed_2016": compare.seed_agreement(an.band_pairs),
              "conditional": sections.conditional_table(cond), "cpu_per_request": sections.cpu_table(cpu)}
    beside = repeatability(study, an, processed_dir.parent, settings.get("compare_with"))
    if beside is not None:
        tables["repeatability"] = beside[1]
        tables["repeatability_measures"] = repeatability_measures(study, processed_dir.parent,
                                                                  settings.get("compare_with"))
    write_tables(tables, out_dir / "tables")
    method = config.ROOT / "docs" / "method.md"
    text = render(ds, an, figures, tables, method.read_text() if method.exists() else None, cond, cpu)
    path = out_dir / "report.html"
    from ..results import atomic_write_text
    atomic_write_text(path, text)
    # the report's first paragraph as plain text: `run-all` ends with this line (answer_of)
    atomic_write_text(out_dir / "answer.txt", lead.headline_sentence(ds, an, cond=cond, cpu=cpu) + "\n")
    return path


def answer_of(study: str, reports_dir: Path | None = None) -> str:
    """The one-line answer build_all wrote for a study (the report's first paragraph)."""
    path = Path(reports_dir or config.REPORTS / study) / "answer.txt"
    return path.read_text().strip() if path.exists() else f"{study}: no report built"
