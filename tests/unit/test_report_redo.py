"""The report's redo counts by arm (issue 25): runs from redone repetitions and still disturbed."""

from types import SimpleNamespace

import pandas as pd

from cnibench.analysis import sections


def _ds(rows):
    return SimpleNamespace(runs=pd.DataFrame(rows))


def test_redo_counts_by_arm_and_size():
    rows = [dict(arm="host", size="small", attempt=1, disturbed=False),
            dict(arm="host", size="small", attempt=2, disturbed=False),
            dict(arm="macvlan", size="small", attempt=2, disturbed=True),
            dict(arm="macvlan", size="large", attempt=1, disturbed=False)]
    t = sections.redo_table(_ds(rows)).set_index(["arm", "size"])
    assert t.loc[("host", "small")].tolist() == [2, 1, 0]
    assert t.loc[("macvlan", "small")].tolist() == [1, 1, 1]
    assert t.loc[("macvlan", "large")].tolist() == [1, 0, 0]
    html = "".join(sections.redo_section(_ds(rows)))
    assert "2 of 4 runs used come from a redone repetition" in html


def test_records_before_the_redo_change_count_as_first_attempts():
    t = sections.redo_table(_ds([dict(arm="host", size="small", disturbed=False)]))
    assert t["from_redone_repetitions"].tolist() == [0]
    assert sections.redo_section(_ds([])) == []
