"""Benchmark ``python -m grading similarity`` on synthetic classes: ranking quality and time (CPU only).

Each homework's class (``tests/grading/similarity_set``) has independent students written in different styles and
disguised copies of some of them (renamed, reformatted, reordered, all three, partial, markers deleted), zipped as
``{NAME}_{SID}.zip``. A copy and its source are a positive pair; every other pair is negative. For each setting the
table gives the time of the whole command (load the zips, extract regions, copydetect, report), the lowest copy
score, the highest independent score, precision and recall at top-k (k = number of copies) and at the threshold.

Measured on the 2-core CPU of the dev machine (shared), 200 submissions per homework, seed 0:

| homework | N | time s | min copy | max indep | P@k | R@k |
|---|---|---|---|---|---|---|
| umich-hw5-gan | 200 | see the report | | | | |

The default threshold (0.5) and ``--max-share`` (10) come from these runs; see the module docstring of
``grading.similarity`` for what the score is.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "grading" / "similarity_set"))

import simset  # noqa: E402
from simset_refs import HOMEWORKS, REGIONS  # noqa: E402

from grading.similarity import DEFAULT_MAX_SHARE, DEFAULT_NOISE, DEFAULT_THRESHOLD, run_similarity  # noqa: E402
from grading.spec import Homework, Task  # noqa: E402


def homework_spec(hw: str) -> Homework:
    """A minimal spec of a synthetic homework (its regions in one task, the KAIST/UMich zip name)."""
    packages = tuple(sorted({rel.split("/")[0] for rel in HOMEWORKS[hw]}))
    return Homework(hw, hw, "", packages, (Task("all", "all regions", REGIONS[hw], 1.0),), (), "{name}_{sid}.zip")


def make_class(hw: str, n: int, copies: int, folder: Path, seed: int = 0):
    """Zips of ``n`` submissions (``copies`` of them copies); returns the students, their zips and sid -> key."""
    students = simset.build(hw, n - copies, copies, seed)
    zips = simset.write_zips(hw, students, folder, seed)
    sid_of = {st.key: zips[st.key].stem.rsplit("_", 1)[1] for st in students}
    return students, zips, sid_of


def evaluate(pairs, students, sid_of, threshold: float) -> dict:
    """Ranking quality against the known copies."""
    truth = {frozenset((sid_of[a], sid_of[b])) for a, b in simset.truth(students)}
    labels = [frozenset((p.a, p.b)) in truth for p in pairs]
    k = len(truth)
    flagged = [lab for p, lab in zip(pairs, labels) if p.score >= threshold]
    pos = [p.score for p, lab in zip(pairs, labels) if lab]
    neg = [p.score for p, lab in zip(pairs, labels) if not lab]
    return {"pairs": len(pairs), "copies": k, "min_copy": min(pos), "max_indep": max(neg),
            "p_at_k": sum(labels[:k]) / k, "r_at_k": sum(labels[:k]) / k,
            "p_at_t": sum(flagged) / max(len(flagged), 1), "r_at_t": sum(flagged) / k,
            "separated": min(pos) > max(neg)}


def run_one(hw: str, zips_folder: Path, out: Path, students, sid_of, noise: int, max_share: int,
            threshold: float) -> dict:
    start = time.perf_counter()
    pairs, _ = run_similarity(homework_spec(hw), [zips_folder], [], out, threshold=threshold, noise=noise,
                              references=HOMEWORKS[hw], max_share=max_share)
    row = {"homework": hw, "n": len(students), "noise": noise, "max_share": max_share,
           "seconds": time.perf_counter() - start}
    row.update(evaluate(pairs, students, sid_of, threshold))
    return row


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 119})
@click.option("--homeworks", default="umich-hw5-gan,kaist-a4", show_default=True,
              help="Comma-separated synthetic homeworks.")
@click.option("--submissions", "n", type=click.IntRange(4), default=200, show_default=True,
              help="Submissions per homework.")
@click.option("--copies", type=click.IntRange(1), default=30, show_default=True, help="How many are copies.")
@click.option("--noise", default=str(DEFAULT_NOISE), show_default=True, help="k values to try (comma-separated).")
@click.option("--max-share", "max_share", default=str(DEFAULT_MAX_SHARE), show_default=True,
              help="Common-code cut-offs to try (comma-separated; 0 = off).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=DEFAULT_THRESHOLD, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rows here.")
def main(homeworks, n, copies, noise, max_share, threshold, seed, json_path) -> None:
    """Time and ranking quality of the similarity command on synthetic classes with known copies.

    \b
    Examples:
      python benchmarks/bench_similarity.py
      python benchmarks/bench_similarity.py --submissions 24 --copies 8 --noise 15,20,25,30 --max-share 0,10
    """
    if copies * 2 > n:
        raise click.BadParameter("at most half the submissions can be copies", param_hint="--copies")
    rows = []
    print("| homework | N | k | max share | time s | min copy | max indep | P@k | R@k | P@t | R@t | separated |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for hw in [h.strip() for h in homeworks.split(",") if h.strip()]:
        if hw not in HOMEWORKS:
            raise click.BadParameter(f"unknown synthetic homework {hw!r}", param_hint="--homeworks")
        with tempfile.TemporaryDirectory(prefix="bench-similarity-") as tmp:
            students, _, sid_of = make_class(hw, n, copies, Path(tmp) / "zips", seed)
            for k in _ints(noise):
                for m in _ints(max_share):
                    r = run_one(hw, Path(tmp) / "zips", Path(tmp) / f"out-{k}-{m}", students, sid_of, k, m,
                                threshold)
                    rows.append(r)
                    print(f"| {hw} | {r['n']} | {k} | {m} | {r['seconds']:.1f} | {r['min_copy']:.3f} | "
                          f"{r['max_indep']:.3f} | {r['p_at_k']:.2f} | {r['r_at_k']:.2f} | {r['p_at_t']:.2f} | "
                          f"{r['r_at_t']:.2f} | {r['separated']} |", flush=True)
    if json_path:
        json_path.write_text(json.dumps(rows, indent=2, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
