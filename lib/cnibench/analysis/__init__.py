"""Stage 5, analysis: the dataset read from records, statistics, figures, the report, study
comparison and synthetic studies for tests (the explorer notebook's logic lives here too).

May import: catalog, parsing, errors, results, infra, study
"""
