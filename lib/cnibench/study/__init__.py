"""Stage 4, the study: the study file (spec), its run matrix, the runner that owns a study run
(calibration glue, records, redo policy), the host precheck, the run notebooks (runbook), status
lines (runview), provenance (the manifest) and progress.

May import: catalog, parsing, errors, results, infra, modes, workload
"""
