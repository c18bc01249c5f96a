"""cnibench: what does a container network cost, compared with no containerization?

The package is grouped by stage, in the order data flows (each stage may import only the
stages before it; its __init__ docstring says which, tests/unit/test_layering.py enforces it):

    infra/     hosts and how to reach them: inventory, SSH and local runners, the testbed
    modes/     network modes: the API and registry, engine/ (apply, facts, verify, state), kinds/
    workload/  nginx, the load generators, latency, metrics, noise guards, calibration
    study/     the study file, its matrix, the runner, precheck, notebooks, provenance
    analysis/  dataset, statistics, figures, the report, comparison, synthetic studies

Foundation modules: catalog, parsing, errors, results, record
(shared names, pure parsers, errors and the run record; they import only each other.)
pipeline.py is `invoke run-all` over every stage and may import any of them.
"""

__version__ = "0.1.0"
