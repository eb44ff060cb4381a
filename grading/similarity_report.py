"""The report of ``python -m grading similarity``: ``pairs.csv`` (every pair), ``report.html`` (the flagged pairs side
by side, shared code marked with copydetect's highlighter) and ``summary.json`` (parameters, flagged pairs, problems).

Every file goes through a temporary name and a rename, and the summary is checked for NaN before anything is written,
so a reader never sees half a report. Student text is HTML-escaped everywhere.
"""

from __future__ import annotations

import csv
import html
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from common.runs import write_json_atomic

if TYPE_CHECKING:  # annotations only: grading.similarity imports this module
    from grading.similarity import Document, Pair


def _highlighted(det, fa: str, fb: str) -> tuple[str, str]:
    """Both files as HTML with the shared code marked (copydetect's slices and highlighter)."""
    from copydetect.utils import highlight_overlap

    if (fa, fb) in det.slice_matrix:
        sa, sb = det.slice_matrix[(fa, fb)]
    elif (fb, fa) in det.slice_matrix:
        sb, sa = det.slice_matrix[(fb, fa)]
    else:
        return html.escape(det.file_data[fa].raw_code), html.escape(det.file_data[fb].raw_code)
    return tuple(highlight_overlap(det.file_data[f].raw_code, s, "<mark>", "</mark>", escape_html=True)[0]
                 for f, s in ((fa, sa), (fb, sb)))


def _write_csv(path: Path, pairs: list[Pair], docs: dict[str, Document], threshold: float) -> None:
    rows = [["rank", "a", "b", "kind", "score", "sim_a", "sim_b", "tokens", "flagged", "a_label", "b_label"]]
    for rank, p in enumerate(pairs, 1):
        rows.append([rank, p.a, p.b, p.kind, p.score, p.sim_a, p.sim_b, p.tokens, int(p.score >= threshold),
                     docs[p.a].label, docs[p.b].label])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    os.replace(tmp, path)


def _html(title: str, shown: list[Pair], n_pairs: int, docs: dict[str, Document], det, paths: dict[str, str],
          threshold: float, problems: dict[str, list[str]]) -> str:
    """The ranked table, then each shown pair side by side with the shared code marked, then the problems."""
    flagged = sum(p.score >= threshold for p in shown)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif}pre{font-size:12px;background:#f6f6f6;padding:6px;overflow:auto}"
             "mark{background:#ffb3b3}td{vertical-align:top;width:50%}.f{color:#b00}</style>",
             f"<h1>{html.escape(title)}</h1><p>{n_pairs} pairs; {flagged} at or above the threshold {threshold:g}. "
             "Scores are triage: read the code before concluding anything.</p>",
             "<table border=1 cellspacing=0><tr><th>#</th><th>score</th><th>a</th><th>b</th><th>a in b</th>"
             "<th>b in a</th><th>tokens</th></tr>"]
    for rank, p in enumerate(shown, 1):
        parts.append(f"<tr{' class=f' if p.score >= threshold else ''}><td><a href='#p{rank}'>{rank}</a></td>"
                     f"<td>{p.score:.2f}</td><td>{html.escape(docs[p.a].label)}</td>"
                     f"<td>{html.escape(docs[p.b].label)}</td><td>{p.sim_a:.2f}</td><td>{p.sim_b:.2f}</td>"
                     f"<td>{p.tokens}</td></tr>")
    parts.append("</table>")
    for rank, p in enumerate(shown, 1):
        ha, hb = _highlighted(det, paths[p.a], paths[p.b])
        parts.append(f"<h2 id='p{rank}'>#{rank} score {p.score:.2f}</h2><table><tr><td><b>"
                     f"{html.escape(docs[p.a].label)}</b><pre>{ha}</pre></td><td><b>{html.escape(docs[p.b].label)}"
                     f"</b><pre>{hb}</pre></td></tr></table>")
    if problems:
        parts.append("<h2>Problems</h2><ul>" + "".join(
            f"<li>{html.escape(k)}: {html.escape(m)}</li>" for k, v in problems.items() for m in v) + "</ul>")
    return "\n".join(parts)


def write_report(out: Path, title: str, pairs: list[Pair], docs: dict[str, Document], det, paths: dict[str, str],
                 threshold: float, problems: dict[str, list[str]], top: int, params: dict | None = None) -> None:
    """``pairs.csv`` (every pair), ``report.html`` (the flagged pairs, at least ``top``, side by side) and
    ``summary.json`` (parameters, flagged pairs, problems)."""
    flagged = [p for p in pairs if p.score >= threshold]
    listed = {k: v for k, v in problems.items() if v}
    summary = {"title": title, "threshold": threshold, **(params or {}), "pairs": len(pairs),
               "flagged": [{**p.__dict__, "a_label": docs[p.a].label, "b_label": docs[p.b].label} for p in flagged],
               "problems": listed}
    json.dumps(summary, allow_nan=False)  # refuse NaN before any of the three files is written
    _write_csv(out / "pairs.csv", pairs, docs, threshold)
    shown = pairs[:max(top, len(flagged))]
    tmp = out / "report.html.tmp"
    tmp.write_text(_html(title, shown, len(pairs), docs, det, paths, threshold, listed), encoding="utf-8")
    os.replace(tmp, out / "report.html")
    write_json_atomic(out / "summary.json", summary)
