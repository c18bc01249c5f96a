"""Tables as Markdown and HTML (the report, `invoke compare`, the written tables)."""

from __future__ import annotations

import numpy as np
import pandas as pd

WIDEST_PCT = 1000.0  # an interval bound beyond +-1,000 % is shown as "—", not as a number


def pct_text(v: float) -> str:
    """A percentage as the answer and the tables print it ("> 1,000 %" beyond WIDEST_PCT)."""
    return f"> {WIDEST_PCT:,.0f} %" if v > WIDEST_PCT else f"{v:,.0f} %"


def to_markdown(df: pd.DataFrame, floatfmt: str = "{:.3g}") -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else floatfmt.format(v)
        return str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def to_html(df: pd.DataFrame, table_id: str | None = None, floatfmt: str = "{:.3g}") -> str:
    return df.to_html(index=False, border=0, classes="tbl", table_id=table_id, na_rep="",
                      float_format=lambda v: floatfmt.format(v), escape=True)
