"""cnibench tasks. Each task is a few lines calling lib/cnibench; `invoke --list` shows them.

Run as root on the machine that drives the study (for the local testbed: this machine).
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys

from invoke import Collection, Exit, Task, task

from cnibench.errors import CnibenchError
from cnibench.infra import config, packages
from cnibench.study.hostsession import fit_report, leased, run as _run, with_fleet as _with_fleet


def cli_errors(fn):
    """Every task: the project's errors become one clear message and exit code 2."""

    @functools.wraps(fn)
    def task_body(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CnibenchError as exc:
            raise Exit(f"error: {exc}", code=2) from None

    return task_body


# --- foundation ---
@task
@cli_errors
def setup(c):
    """Install the Debian packages the project needs when missing (as root), or say the command."""
    packages.ensure()


@task(help={"hosts": "comma-separated host names (default: client,server)",
            "sshd_nofile": "start the hosts' sshd under this open-file limit (e.g. 256: what hosts.check --study says)",
            "clients": "how many of the hosts, the first ones, are load clients (default 1), "
                       "e.g. --hosts client,client2,server --clients 2"})
@cli_errors
def testbed_up(c, hosts="client,server", sshd_nofile=None, clients=1):
    """Bring the local testbed up (idempotent) and print its inventory path."""
    from cnibench.infra import testbed

    packages.ensure()
    print(testbed.up([h for h in hosts.split(",") if h], sshd_nofile=int(sshd_nofile) if sshd_nofile else None,
                     clients=int(clients)))


@task
@cli_errors
def testbed_down(c):
    """Remove every object the local testbed created (namespaces, links, sshd, files)."""
    from cnibench.infra import testbed

    removed = testbed.down()
    print("\n".join(removed) if removed else "nothing to remove: the testbed is down")


@task(help={"json_": "print JSON"})
@cli_errors
def testbed_status(c, json_=False):
    """Show what of the local testbed exists."""
    from cnibench.infra import testbed

    from cnibench.infra.testbed_text import format_status

    st = testbed.status()
    print(json.dumps(st, indent=2) if json_ else format_status(st))


@task(help={"inventory": "inventory file (default inventories/testbed.yml)", "json_": "print JSON",
            "study": "also check the host tuning this study requires (its 'require:' key)"})
@cli_errors
def hosts_check(c, inventory=None, json_=False, study=None):
    """Precheck every host: reachable, privileges, tools, kernel features, CPU, MTU, tuning, hiccup meter."""
    from cnibench.study.hostsession import check_hosts
    from cnibench.study.precheck import format_table
    from cnibench.study.spec import load_study

    reports = check_hosts(inventory, load_study(study).require if study else None)
    print(json.dumps([r.to_dict() for r in reports], indent=2) if json_ else format_table(reports))
    bad = any(r.problems() for r in reports)
    if study and all(r.reachable for r in reports):  # the study against the hosts' CPUs and limits
        bad = not _print_fit(study, inventory or config.DEFAULT_INVENTORY, json_) or bad
    if bad:
        raise Exit(code=1)

@task(help={"k": "only tests matching this expression", "unit": "unit tests only (no root needed)",
            "long": "also the long tier (tests/conftest.py: cases repeating a path another one drives)"})
@cli_errors
def test(c, k="", unit=False, long=False):
    ("Install what is missing (Debian packages, chromium for the report test), then run the test suite "
     "(integration tests need root).")
    if os.geteuid() == 0:
        packages.ensure({**packages.REQUIRED, **packages.FOR_TESTS})
    lint = c.run(shlex.join([sys.executable, "-m", "ruff", "check", "."]), warn=True, pty=False)
    if lint.exited != 0:
        raise Exit("error: ruff check found problems (above); fix them before the tests run", code=lint.exited)
    argv = [sys.executable, "-m", "pytest", "-q"] + (["tests/unit"] if unit else []) + (["-k", k] if k else [])
    result = c.run(shlex.join(argv), warn=True, pty=False, env={"CNIBENCH_LONG_TESTS": "1"} if long else {})
    if result.exited != 0:
        raise Exit(code=result.exited)


@task
def test_the_tests(c):
    """Show that the timing tests can fail: a deliberately broken generator must fail the pacing tests and an
    always-ok guard the hog test (tests/meta/; about 5 minutes; needs root and the testbed)."""
    argv = [sys.executable, "-m", "pytest", "-q", "-s", "tests/meta"]
    result = c.run(shlex.join(argv), warn=True, pty=False, env={"CNIBENCH_TEST_THE_TESTS": "1"})
    if result.exited != 0:
        raise Exit(code=result.exited)


@task(help={"upgrade": "move every pin to the newest release (default: keep the pins, follow pyproject.toml's "
            "changes)"})
@cli_errors
def lock(c, upgrade=False):
    """Regenerate requirements.lock from pyproject.toml: exact versions and hashes (Python 3.11, Linux x86_64)."""
    from cnibench.infra import lockfile

    result = c.run(shlex.join(lockfile.compile_command(upgrade)), warn=True, pty=False)
    if result.exited != 0:
        raise Exit("error: uv could not lock the dependencies (is uv installed? python3 -m pip install uv)",
                   code=result.exited or 1)
    print(f"{lockfile.LOCK.name}: {len(lockfile.parse(lockfile.LOCK.read_text()))} packages pinned with hashes")


# --- modes ---

from cnibench.modes import cli  # noqa: E402  (the mode tasks' text and JSON)
from cnibench.modes.clean import clean as sweep  # noqa: E402
from cnibench.modes.cli import mode_help, settings_from_options  # noqa: E402  (the registry names the modes)

_MODE_HELP = {
    "mode": mode_help(),
    "inventory": "inventory file (default: the local testbed)",
    "dry_run": "print the exact commands per host and change nothing",
    "json_": "print JSON",
    "ipvlan_mode": "ipvlan mode: l2 or l3",
    "cluster_cidr": "pod network (default 10.244.0.0/16)",
    "implementation": "who builds the mode: project (its own plan, default) or another registered one (e.g. cni)",
}


@task(help=_MODE_HELP)
@cli_errors
def mode_up(c, mode, inventory=None, dry_run=False, json_=False, ipvlan_mode="l2", cluster_cidr="10.244.0.0/16",
            implementation=None):
    """Bring a network mode up on the hosts and print its endpoint (--dry-run: print the plan)."""
    settings = settings_from_options(mode, ipvlan_mode=ipvlan_mode, cluster_cidr=cluster_cidr)
    print(_with_fleet(inventory, lambda fleet: cli.up(fleet, mode, settings, dry_run, json_, implementation),
                      lease=None if dry_run else f"mode.up --mode {mode}"))


@task(help={k: _MODE_HELP[k] for k in ("mode", "inventory", "dry_run", "json_")})
@cli_errors
def mode_down(c, mode=None, inventory=None, dry_run=False, json_=False):
    """Tear down the mode that is up (from the stored state); idempotent."""
    print(_with_fleet(inventory, lambda fleet: cli.down(fleet, mode, dry_run, json_),
                      lease=None if dry_run else "mode.down"))


@task(help={k: _MODE_HELP[k] for k in ("mode", "inventory", "json_")})
@cli_errors
def mode_verify(c, mode, inventory=None, json_=False):
    """Check reachability (one HTTP request client container -> server) and the data path."""
    text, ok = _with_fleet(inventory, lambda fleet: cli.verify(fleet, mode, json_))
    print(text)
    if not ok:
        raise Exit(code=1)


@task(help={k: _MODE_HELP[k] for k in ("inventory", "json_")})
@cli_errors
def mode_status(c, inventory=None, json_=False):
    """Show which mode is up on each host, its endpoint and its setup cost."""
    print(_with_fleet(inventory, lambda fleet: cli.status(fleet, json_)))


@task(help={"inventory": "inventory file (default: the local testbed)"})
@cli_errors
def clean(c, inventory=None):
    """Remove every leftover of any network mode (by the cnib prefix), e.g. after a crash."""
    done = _with_fleet(inventory, _clean_all, lease="clean", clean=True)  # clean also takes over a stale lease
    print("\n".join(done) if done else "nothing to clean")


async def _clean_all(fleet) -> list[str]:
    """The client's widened port ranges first (in namespaces the sweep then deletes), then the modes."""
    from cnibench.workload.ports import restore_all

    return await restore_all(fleet.client) + await sweep(fleet)

# --- workload ---

from cnibench.workload.cli import bench_help, bench_spec, calibration_line  # noqa: E402

_BENCH_HELP = bench_help(mode_help())


@task(help=_BENCH_HELP)
@cli_errors
def bench(c, mode, size, rate, duration, warmup="2", connections=None, generator="openloop", threads=1, pipeline=0,
          no_pin=False, no_metrics=False, inventory=None, arrival="uniform"):
    """Run nginx + a constant-rate load once; print a summary; write the record under data/raw/adhoc/."""
    from cnibench.workload import cli

    spec = bench_spec(mode, size, rate, duration, warmup, connections, generator, threads, pipeline, no_pin,
                      no_metrics, arrival)
    rec, path = leased(inventory, f"bench --mode {mode} --rate {rate}", lambda: _run(cli.bench(spec, inventory)))
    print(cli.summary(rec))
    print(f"record: {path}")
    if rec["status"] == "failed":
        raise Exit(code=1)


@task(help={**{k: _BENCH_HELP[k] for k in ("mode", "size", "connections", "generator", "threads", "inventory")},
            "bound": "latency bound in ms a sustainable rate must stay under (default 10)",
            "percentile": "the latency percentile the bound applies to (default 90; docs/method.md says why not 99)"})
@cli_errors
def calibrate(c, mode, size, bound=10.0, percentile=90.0, connections=0, generator="openloop", threads=1,
              inventory=None):
    ("Find the maximum sustainable rate (valid run, latency percentile under the bound) "
     "and the saturation throughput.")
    from cnibench.workload import cli

    spec = bench_spec(mode, size, 1000, 3, 1, connections, generator, threads, 0, False, True)
    pct = f"p{float(percentile):g}"
    progress = calibration_line(pct)
    result, path = leased(inventory, f"calibrate --mode {mode}",
                           lambda: _run(cli.calibrate_cli(spec, float(bound), float(percentile), inventory, progress)))
    print(f"{mode}/{size}: maximum sustainable rate {result['max_rate']:.0f} req/s ({pct} <= {bound} ms), "
          f"saturation {result['saturation_rate'] or 0:.0f} req/s")
    print(f"stored: {path}")

# --- pipeline ---


@task(help={
    "study": "study file or name in studies/ (default: lab)",
    "inventory": "inventory file (default: the study's; the local testbed for lab/quick)",
    "keep": "leave the testbed up at the end",
    "stop_on_failure": "stop at the first failed run (default: record it and go on)",
    "no_progress": "no progress bar (one line per run only)",
})
@cli_errors
def run_all(c, study="lab", inventory=None, keep=False, stop_on_failure=False, no_progress=False):
    """The main job: testbed up -> precheck -> calibrate if needed -> every run -> analysis -> report -> testbed down.

    Run it again to resume: finished runs are skipped, half-written ones redone."""
    from cnibench.pipeline import run_all as pipeline_run_all

    try:
        if os.geteuid() == 0:
            packages.ensure()
        pipeline_run_all(study, inventory, keep=keep, stop_on_failure=stop_on_failure, progress=not no_progress)
    except KeyboardInterrupt:
        raise Exit("interrupted: the current mode was torn down, finished runs are kept; run the same command again to "
                   "resume", code=130)


@task(help={"study": "study file or name in studies/ (default: lab)"})
@cli_errors
def status(c, study="lab"):
    """How much of a study is recorded: planned, ok, invalid, failed, missing per mode and size,
    and its redo counts by arm (repetitions redone whole, their runs, disturbed runs)."""
    from cnibench.study.status import format_status, study_status

    print(format_status(study_status(study)))

# --- analysis ---

_STUDY_HELP = {"study": "study name or file in studies/ (default: lab); reads data/raw/<study>"}


from cnibench.study.spec import study_name_arg as _study_name  # noqa: E402  (a bare name; '../../x' refused)
from cnibench.study.status import require_records as _need_raw  # noqa: E402


@task(help=_STUDY_HELP)
@cli_errors
def analyze(c, study="lab"):
    """Tidy dataset and statistics (data/processed/<study>/); prints the headline."""
    from cnibench.analysis import dataset, lead, report

    name = _study_name(study)
    _need_raw(name)
    ds = dataset.build_and_save(name, config.RAW, config.PROCESSED / name)
    an, cond, cpu = report.analyse_and_save(ds, config.PROCESSED / name)
    print(report.to_markdown(lead.with_conditional_and_cpu(report.headline_table(an), cond, cpu)))
    print(lead.headline_sentence(ds, an, cond=cond, cpu=cpu))
    print(f"{int((~ds.runs['valid']).sum())} invalid or failed runs excluded; tables in {config.PROCESSED / name}")


@task(help=_STUDY_HELP)
@cli_errors
def figures(c, study="lab"):
    """Every publication figure as PDF, SVG and 300-dpi PNG in figures/<study>/."""
    from cnibench.analysis import dataset, plots, report

    name = _study_name(study)
    _need_raw(name)
    ds = dataset.build_and_save(name, config.RAW, config.PROCESSED / name)
    for fig, paths in plots.make_all(ds, report.analyse(ds), config.FIGURES / name).items():
        print(paths["png"])


@task(help={**_STUDY_HELP, "notebooks": "also render the run notebooks the records lack (off run-all's wall time)"})
@cli_errors
def report(c, study="lab", notebooks=False):
    """dataset -> statistics -> figures -> tables -> one self-contained reports/<study>/report.html.
    --notebooks: also render the run notebooks its records lack (data/runs/<study>/; lab.yml
    leaves them out of run-all's wall time)."""
    from cnibench.analysis.report import build_all

    name = _study_name(study)
    _need_raw(name)
    print(build_all(name, config.RAW))
    if notebooks:
        from cnibench.study.run_notebooks import render_study_notebooks

        render_study_notebooks(name, config.RAW, config.RUNS)


@task(iterable=["study"], help={"study": "a study name (data/processed/<name>) or another clone's processed directory; "
                                "give it twice"})
@cli_errors
def compare(c, study=None):
    """Two studies side by side: per mode and size, do the 95 % intervals agree at p50, raw p99, p99
    outside hypervisor steal and CPU softirq per request on each pinned core?"""
    from cnibench.analysis import report
    from cnibench.analysis.compare import compare_measures, measure_summary

    if len(study or []) != 2:
        raise Exit("error: compare: give exactly two studies, e.g. invoke compare --study lab --study "
                   "/other/clone/data/processed/lab", code=2)
    (na, a), (nb, b) = (report.measures_of(s) for s in study)
    table = compare_measures(a, b, (na, nb))
    print(report.to_markdown(table))
    print("\n".join(measure_summary(table)))


@task(help={**_STUDY_HELP, "port": "port on 127.0.0.1 (default 8888)"})
@cli_errors
def jupyter(c, study="lab", port=8888):
    """JupyterLab on notebooks/explore.ipynb (the interactive explorer), bound to 127.0.0.1."""
    argv = ["jupyter", "lab", str(config.NOTEBOOKS / "explore.ipynb"), "--ip=127.0.0.1", f"--port={int(port)}",
            "--no-browser"] + (["--allow-root"] if os.geteuid() == 0 else [])
    os.environ["CNIBENCH_STUDY"] = _study_name(study)  # explore.ipynb's default study
    os.execvp(argv[0], argv)


# --- the CPU plan and host limits, read-only (issue 28) ---
def _print_fit(study, inventory, json_=False) -> bool:
    """Fit the study to the inventory's hosts (read-only) and print it; True when it fits."""
    text, fits = fit_report(study, inventory, json_)
    print(text)
    return fits


@task(help={"study": "study file or name in studies/", "inventory": "inventory file (default: the study's)",
            "json_": "print JSON"})
@cli_errors
def hosts_plan(c, study, inventory=None, json_=False):
    """Print per host the CPU plan (cpus: auto), whether irqbalance runs and every limit problem: changes nothing."""
    if not _print_fit(study, inventory, json_):
        raise Exit(code=1)


# --- namespace: `testbed_up` is `invoke testbed.up`, `mode_up` is `invoke mode.up`, ... ---
GROUPS = ("testbed", "hosts", "mode")


def _namespace() -> Collection:
    root, groups = Collection(), {g: Collection(g) for g in GROUPS}
    for name, obj in list(globals().items()):
        if not isinstance(obj, Task) or name.startswith("_"):
            continue
        group, _, short = name.partition("_")
        if group in groups and short:
            groups[group].add_task(obj, short.replace("_", "-"))
        else:
            root.add_task(obj, name.replace("_", "-"))
    for g in groups.values():
        if g.tasks:
            root.add_collection(g)
    return root


ns = _namespace()

