"""The study file: which modes, sizes, loads and repetitions to run, and how.

A study is YAML, validated into a frozen `Study`. Every error names the file, the key, what
is wrong and how to fix it (ConfigError), like inventories do.

    name: lab                      # default: the file's stem; part of every run id
    inventory: ../inventories/testbed.yml   # relative to this file
    seed: 2016                     # fixes the randomized run order
    modes: [host, flannel-vxlan]   # names from cnibench.modes (MODES)
    reference: host                # the mode others are compared with (and calibrated on)
    twin: true                     # an A/A twin of the reference in every block (matrix.py)
    sizes: [small, large]          # small = 350 B on the wire, large = 4 KB body
    load:
      fractions: [0.1, 0.3, 0.5]   # of the reference mode's calibrated max rate ...
      # rates: [50000, 100000]     # ... or absolute requests/s (exactly one of the two)
      # rotate: true               # each repetition runs one of the loads, in turn (see matrix.py)
    repetitions: 1                 # every point
    focus: {range: [0.3, 0.5], repetitions: 3}   # more repetitions where the study looks
    workload: {duration_s: 8, warmup_s: 2, connections: 32, ...}   # BenchSpec fields; optional:
                                   # duration_s 10, warmup_s 2, connections max(10, ceil(rate/100))
                                   # (workload/defaults.py, which also has the bounds)
    calibration: {...}             # keyword arguments of workload calibrate(); modes: all (calibrate every mode)
    redo: {max_attempts: 2}        # disturbed repetitions redone whole (attempts.py); quiet, require
    budget_s: 1200                 # wall-time cap: redos stop before they would exceed it
    mode_settings: {flannel-vxlan: {...}}        # per-mode settings for mode_up()
    implementations: {macvlan: [cni]}   # arm "macvlan·cni" besides "macvlan" (implementations.py)
    notebooks: warm                # warm | fresh | measure | none (see runner.py)
    analysis: {equivalence_margin: 0.10, compare_with: [lab-a]}   # see stats.py, compare.py
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..infra.config import DEFAULT_INVENTORY, SAFE_NAME_RE, STUDIES, resolve_relative, did_you_mean, read_yaml
from . import implementations as impls, policy, variants
from ..catalog import SIZES
from ..errors import ConfigError
from .spec_load import is_int, is_number, no_unknown, parse_loads, parse_repetitions
from .keys import REFERENCE, calibration_keys, known_modes, mode_setting_keys, workload_keys

_SIZE_ALIASES = {"350b": "small", "350": "small", "4kb": "large", "4k": "large", "4096": "large"}
NOTEBOOK_POLICIES = ("warm", "fresh", "measure", "none")
_TOP_KEYS = (
    "name", "description", "inventory", "seed", "modes", "reference", "sizes", "load",
    "repetitions", "focus", "workload", "calibration", "mode_settings", "notebooks", "analysis",
    "redo", "quiet", "require", "twin", "variants", "budget_s", "implementations",
)
TWIN_SUFFIX = "·A/A"  # the arm of the reference's A/A twin: e.g. "host·A/A"
ANALYSIS_KEYS = ("equivalence_margin", "compare_with")
@dataclass(frozen=True)
class Study:
    path: Path
    name: str
    inventory: Path
    seed: int
    modes: tuple[str, ...]
    reference: str
    sizes: tuple[str, ...]
    load_kind: str  # "fraction" | "rate"
    loads: tuple[float, ...]  # sorted ascending
    repetitions: int
    focus_range: tuple[float, float] | None
    focus_repetitions: int
    workload: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    mode_settings: dict[str, dict] = field(default_factory=dict)
    notebooks: str = "warm"
    description: str = ""
    redo: dict[str, Any] = field(default_factory=dict)  # policy.py
    quiet: dict[str, Any] = field(default_factory=dict)
    require: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # sha256 of the file's bytes, for the provenance manifest
    rotate_loads: bool = False  # one load per repetition, in turn (load.rotate)
    analysis: dict[str, Any] = field(default_factory=dict)  # equivalence_margin, compare_with
    twin: bool = False  # run the reference a second time per block, as arm "<reference>·A/A"
    variants: dict[str, dict] = field(default_factory=dict)  # arms "<mode>·<name>" with settings added (variants.py)
    budget_s: float | None = None  # wall-time cap (policy.parse_budget)
    implementations: dict[str, tuple[str, ...]] = field(default_factory=dict)  # mode -> other implementations

    @property
    def arms(self) -> tuple[tuple[str, str], ...]:
        """(arm, mode) of each arm: every mode as itself and as each of its other implementations,
        its `variants`, and with `twin` the reference again."""
        return impls.arms(self.modes, self.implementations) + variants.arms(self)

    @property
    def twin_arm(self) -> str:
        return f"{self.reference}{TWIN_SUFFIX}"

    def repetitions_at(self, load: float) -> int:
        """How many repetitions the point at `load` gets (more inside the focus range)."""
        if self.focus_range and self.focus_range[0] <= load <= self.focus_range[1]:
            return max(self.repetitions, self.focus_repetitions)
        return self.repetitions

    @property
    def uses_fractions(self) -> bool:
        return self.load_kind == "fraction"


def resolve_study_path(path: Path | str) -> Path:
    """A path, or a bare name like 'quick' meaning studies/quick.yml."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and len(p.parts) == 1:
        candidate = STUDIES / f"{p.name}.yml"
        if candidate.exists():
            return candidate
    return p


def load_study(path: Path | str) -> Study:
    path = resolve_study_path(path)
    data = read_yaml(path)
    study = parse_study(data, path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return dataclasses.replace(study, digest=digest)


def parse_study(data: Any, path: Path | str = "<study>") -> Study:
    """Validate a study document (already parsed YAML) into a Study."""
    path = Path(path)
    if not isinstance(data, dict):
        raise ConfigError(path, "(top level)", "must be a mapping",
                          "Start the file with 'modes:', 'sizes:' and 'load:' keys (see studies/quick.yml).")
    no_unknown(data, _TOP_KEYS, path, "", "top-level key")

    name = _name(data, path)

    inventory = data.get("inventory")
    inventory = resolve_relative(path, inventory) if inventory else DEFAULT_INVENTORY

    seed = data.get("seed", 0)
    if not is_int(seed):
        raise ConfigError(path, "seed", f"'{seed}' is not a whole number",
                          "Write any whole number, e.g. 'seed: 2016'; it fixes the run order.")

    modes = _modes(data, path)
    reference = data.get("reference", REFERENCE)
    sizes = _sizes(data, path)
    load_kind, loads, rotate = parse_loads(data, path)
    # Fractions are of the reference's calibrated maximum: it must be run. With absolute rates a
    # study may leave it out (no comparison then) but must not name a mode that does not exist.
    if reference not in modes and ("reference" in data or load_kind == "fraction"):
        raise ConfigError(path, "reference", f"'{reference}' is not one of this study's modes {list(modes)}",
                          "Add it to 'modes' or name one of them; every mode is compared with the reference (and "
                          "fractions are of its maximum rate).")
    repetitions, focus_range, focus_reps = parse_repetitions(data, path, loads, load_kind, rotate)
    analysis = _analysis(data, path)
    twin = _twin(data, path, reference, modes)

    workload = _workload(data, path)
    calibration = _calibration(data, path)
    mode_settings = _mode_settings(data, path, modes)

    _check_workload(workload, load_kind, loads, modes, sizes, path)

    notebooks = data.get("notebooks", "warm")
    if notebooks not in NOTEBOOK_POLICIES:
        raise ConfigError(path, "notebooks",
                          f"'{notebooks}' is not a notebook policy{did_you_mean(str(notebooks), NOTEBOOK_POLICIES)}",
                          "Use 'warm' (one kernel renders every run notebook), 'fresh' (a kernel per run), 'measure' "
                          "(the notebook itself measures, a kernel per run) or 'none'.")

    return Study(
        path=path, name=name, inventory=Path(inventory), seed=int(seed), modes=modes,
        reference=str(reference), sizes=sizes, load_kind=load_kind, loads=loads,
        repetitions=int(repetitions), focus_range=focus_range, focus_repetitions=focus_reps,
        workload=dict(workload), calibration=dict(calibration),
        mode_settings={str(k): dict(v) for k, v in mode_settings.items()},
        notebooks=str(notebooks), description=str(data.get("description") or ""),
        rotate_loads=rotate, analysis=analysis, twin=twin, variants=variants.parse(data, path, modes),
        implementations=impls.parse(data.get("implementations"), path, modes),
        redo=policy.parse_redo(data.get("redo"), path), quiet=policy.parse_quiet(data.get("quiet"), path),
        require=policy.parse_require(data.get("require"), path),
        budget_s=policy.parse_budget(data.get("budget_s"), path),
    )


def _twin(data: dict, path: Path, reference, modes: tuple[str, ...]) -> bool:
    twin = data.get("twin", False)
    if not isinstance(twin, bool):
        raise ConfigError(path, "twin", f"'{twin}' is not true or false",
                          "Write 'twin: true' (an A/A twin of the reference in every block) or leave it out.")
    if twin and reference not in modes:
        raise ConfigError(path, "twin", f"the reference '{reference}' is not one of the modes",
                          "An A/A twin repeats the reference: add it to 'modes'.")
    return twin


def _name(data: dict, path: Path) -> str:
    name = str(data.get("name") or path.stem)
    if not SAFE_NAME_RE.match(name):
        raise ConfigError(path, "name", f"'{name}' is not a usable study name",
                          "Use 1-64 letters, digits, '-' and '_', starting with a letter (it becomes a directory "
                          "name).")
    return name


def _workload(data: dict, path: Path) -> dict:
    workload = _mapping(data, "workload", path)
    no_unknown(workload, workload_keys(), path, "workload.", "workload setting")
    for key in ("duration_s", "warmup_s"):
        if key in workload and (not is_number(workload[key]) or workload[key] < 0):
            raise ConfigError(path, f"workload.{key}", f"'{workload[key]}' is not a number of seconds >= 0",
                              f"Write e.g. '{key}: 8'.")
    if "duration_s" in workload and workload["duration_s"] <= 0:
        raise ConfigError(path, "workload.duration_s", "must be more than 0", "Write e.g. 'duration_s: 8'.")
    for key in ("connections", "threads", "nginx_workers"):
        if key in workload and (not is_int(workload[key]) or workload[key] < 1):
            raise ConfigError(path, f"workload.{key}", f"'{workload[key]}' is not a whole number >= 1",
                              f"Write e.g. '{key}: 1'.")
    for key in ("pin", "metrics"):
        if key in workload and not isinstance(workload[key], bool):
            raise ConfigError(path, f"workload.{key}", f"'{workload[key]}' is not true or false",
                              f"Write '{key}: true' or '{key}: false'.")
    return workload


def _calibration(data: dict, path: Path) -> dict:
    calibration = _mapping(data, "calibration", path)
    keys = calibration_keys()
    if keys:
        no_unknown(calibration, keys + ("modes",), path, "calibration.", "calibration setting")
    if calibration.get("modes", "reference") not in ("reference", "all"):
        raise ConfigError(path, "calibration.modes", f"'{calibration['modes']}' is not 'reference' or 'all'",
                          "Write 'modes: all' to calibrate every mode (a sweep study), or leave it out.")
    return calibration


def _mode_settings(data: dict, path: Path, modes: tuple[str, ...]) -> dict:
    mode_settings = _mapping(data, "mode_settings", path)
    for mode, settings in mode_settings.items():
        if mode not in modes:
            raise ConfigError(path, f"mode_settings.{mode}",
                              f"is not one of this study's modes{did_you_mean(str(mode), modes)}",
                              f"Use one of: {', '.join(modes)}.")
        if not isinstance(settings, dict):
            raise ConfigError(path, f"mode_settings.{mode}", "must be a mapping of settings",
                              "Write settings as 'key: value' lines under the mode name.")
        keys = mode_setting_keys()
        if keys:
            no_unknown(settings, keys, path, f"mode_settings.{mode}.", "mode setting")
            _check_mode_settings(settings, path, f"mode_settings.{mode}", mode)
    return mode_settings


def _modes(data: dict, path: Path) -> tuple[str, ...]:
    raw = data.get("modes")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "modes", "must be a non-empty list of network modes",
                          f"List some of: {', '.join(known_modes())}.")
    known = known_modes()
    out: list[str] = []
    for i, m in enumerate(raw):
        m = str(m)
        if m not in known:
            raise ConfigError(path, f"modes[{i}]", f"'{m}' is not a network mode{did_you_mean(m, known)}",
                              f"Known modes: {', '.join(known)}.")
        if m in out:
            raise ConfigError(path, f"modes[{i}]", f"'{m}' appears twice",
                              "List each mode once; use 'repetitions' to run it more.")
        out.append(m)
    return tuple(out)


def _sizes(data: dict, path: Path) -> tuple[str, ...]:
    raw = data.get("sizes", ["small"])
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "sizes", "must be a non-empty list",
                          "Write e.g. 'sizes: [small, large]' (350 B and 4 KB responses).")
    out: list[str] = []
    for i, s in enumerate(raw):
        s = str(s)
        canon = s if s in SIZES else _SIZE_ALIASES.get(s.lower())
        if canon is None:
            raise ConfigError(path, f"sizes[{i}]", f"'{s}' is not a response size{did_you_mean(s, SIZES)}",
                              "Use 'small' (350 B on the wire) or 'large' (4 KB body).")
        if canon in out:
            raise ConfigError(path, f"sizes[{i}]", f"'{s}' appears twice", "List each size once.")
        out.append(canon)
    return tuple(out)



def _analysis(data: dict, path: Path) -> dict:
    """The analysis settings: equivalence margin (relative, default stats.MARGIN) and the
    studies to compare with (names in data/processed, or paths of their processed directories)."""
    analysis = _mapping(data, "analysis", path)
    no_unknown(analysis, ANALYSIS_KEYS, path, "analysis.", "analysis setting")
    out = dict(analysis)
    if "equivalence_margin" in analysis:
        m = analysis["equivalence_margin"]
        if not is_number(m) or not 0 < m < 1:
            raise ConfigError(path, "analysis.equivalence_margin", f"'{m}' is not a fraction between 0 and 1",
                              "Write e.g. 'equivalence_margin: 0.10' (within +-10 % of the reference counts as "
                              "equivalent).")
        out["equivalence_margin"] = float(m)
    if "compare_with" in analysis:
        cw = analysis["compare_with"]
        cw = [cw] if isinstance(cw, str) else cw
        if not isinstance(cw, list) or not all(isinstance(x, str) and x for x in cw):
            raise ConfigError(path, "analysis.compare_with",
                              f"'{analysis['compare_with']}' is not a study name or a list of them",
                              "Write e.g. 'compare_with: lab-a' or 'compare_with: [lab-a, "
                              "/other/clone/data/processed/lab]'.")
        out["compare_with"] = list(cw)
    return out



def _check_mode_settings(settings: dict, path: Path, where: str, mode: str) -> None:
    """Types and ranges of a mode's settings, as mode_up would check them (now, not mid-study)."""
    from ..modes import mode_settings
    from ..modes.base import SettingError

    try:
        mode_settings(mode, settings)
    except SettingError as exc:
        raise ConfigError(path, f"{where}.{exc.key}", exc.problem, exc.fix) from None


def _check_workload(workload: dict, kind: str, loads, modes, sizes, path: Path) -> None:
    """Every run's workload, defaults filled in, through the workload's own validation (bounds
    included), so a study that cannot run stops now with one message. Fraction studies learn
    their rates at calibration: their rate-dependent checks run then (runner.check_runs)."""
    from ..workload.bench import validate_spec
    from ..workload.specfields import bench_spec

    rates = loads if kind == "rate" else (None,)
    for rate in rates:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in workload.items()}
        fields.update(mode=modes[0], size=sizes[0], rate=rate or 1.0)
        try:
            validate_spec(bench_spec(fields), rate_known=rate is not None)
        except ConfigError as exc:
            key = "load.rates" if exc.key == "rate" else f"workload.{_FIELD.get(exc.key, exc.key)}"
            raise ConfigError(path, key, exc.problem, exc.fix) from None
        except TypeError as exc:
            raise ConfigError(path, "workload", f"cannot make a run of it ({exc})",
                              "Check the workload keys and their values.") from None


_FIELD = {"duration": "duration_s", "warmup": "warmup_s", "timeout": "timeout_s"}


def study_name_arg(arg: str) -> str:
    """The study a command's --study names: a study file that exists, or a bare name of one in
    studies/ (the name inside it, as `run-all` records under), else a bare name (data/raw/<name>).
    Anything else, e.g. '../../x', is refused: it would become a path."""
    arg = str(arg)
    p = resolve_study_path(arg)
    if p.suffix in (".yml", ".yaml") and p.is_file():
        return load_study(p).name
    if SAFE_NAME_RE.match(arg):
        return arg
    raise ConfigError("--study", "study", f"'{arg}' is neither a study name nor an existing study file",
                      "Give a name like 'lab' (its records are data/raw/lab) or the path of a .yml study file.")


def _mapping(data: dict, key: str, path: Path) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(path, key, "must be a mapping", f"Write '{key}:' followed by indented 'name: value' lines.")
    return value
