"""Stage 3, the workload: nginx with the study's responses, open-loop load, latency, metrics,
noise guards and calibration. Its CLI glue (cli.py) finds the endpoint of the mode that is up.

May import: catalog, parsing, errors, results, infra, modes
"""
