"""The workload: nginx with the study's responses, open-loop load, latency, metrics, calibration."""
