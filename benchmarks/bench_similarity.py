"""Benchmark ``python -m grading similarity`` on synthetic classes: ranking quality and time (CPU only).

Each homework's class (``tests/grading/similarity_set``) has independent students written in different styles and
disguised copies of some of them (renamed, reformatted, reordered, all three, partial, markers deleted), zipped as
``{NAME}_{SID}.zip``. A copy and its source are a positive pair; every other pair is negative. For each setting the
table gives the time of the whole command (load the zips, extract regions, copydetect, report), the lowest copy
score, the highest independent score, precision and recall among the top k pairs (k = number of copies), recall in
the top 2k, and precision / recall of the pairs flagged at the threshold.

Measured on the dev machine's 2-core CPU shared with other jobs (load 4-5), 200 submissions (170 independent, 30
copies), k = 25, defaults otherwise; three seeds (0, 1, 2):

| homework | time s | min copy | max indep | P@k | R@2k | P@t | R@t |
|---|---|---|---|---|---|---|---|
| umich-hw5-gan | 6.5-12.3 | 0.584-0.606 | 0.551-0.639 | 0.97-1.00 | 1.00 | 0.88-0.97 | 1.00 |
| kaist-a4 | 6.8-13.4 | 0.552-0.588 | 0.462-0.620 | 0.97-1.00 | 1.00 | 0.91-1.00 | 1.00 |

Without the common-code filter (``--max-share 0``) P@k is 0.93 and P@t about 0.2 (seed 0); without the ast cleaning
of the bodies P@k is 0.73-0.77. At 24 submissions (16 + 8, the test's size) every copy ranks above every
independent pair (min copy 0.73 / 0.77, max indep 0.56 / 0.48, seed 0). k = 20 or 30 ranks about the same as 25.
"""

from __future__ import annotations

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

from benchmarks import _cli as bench  # noqa: E402
from common.cli import UserError, finite, user_errors  # noqa: E402
from common.runs import write_json_atomic  # noqa: E402
from grading.similarity import DEFAULT_NOISE, DEFAULT_THRESHOLD, auto_max_share, run_similarity  # noqa: E402
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
            "p_at_k": sum(labels[:k]) / k, "r_at_k": sum(labels[:k]) / k, "r_at_2k": sum(labels[:2 * k]) / k,
            "p_at_t": sum(flagged) / max(len(flagged), 1), "r_at_t": sum(flagged) / k,
            "separated": min(pos) > max(neg)}


def run_one(hw: str, zips_folder: Path, out: Path, students, sid_of, noise: int, max_share: int | None,
            threshold: float) -> dict:
    start = time.perf_counter()
    pairs, _ = run_similarity(homework_spec(hw), [zips_folder], [], out, threshold=threshold, noise=noise,
                              references=HOMEWORKS[hw], max_share=max_share)
    row = {"homework": hw, "n": len(students), "noise": noise,
           "max_share": auto_max_share(len(students)) if max_share is None else max_share,
           "seconds": time.perf_counter() - start}
    row.update(evaluate(pairs, students, sid_of, threshold))
    return row


class AutoInts(click.ParamType):
    """``15,20`` or ``auto,0,10``: comma-separated integers >= 0, ``auto`` as None."""

    name = "INTS"

    def convert(self, value, param, ctx) -> list[int | None]:
        if isinstance(value, list):
            return value
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        if not items or not all(v == "auto" or v.isdigit() for v in items):
            self.fail(f"{value!r}: expected comma-separated integers >= 0 (or auto)", param, ctx)
        return [None if v == "auto" else int(v) for v in dict.fromkeys(items)]


@bench.bench_command()
@click.option("--homeworks", type=bench.CommaChoice(sorted(HOMEWORKS)), default="umich-hw5-gan,kaist-a4",
              show_default=True, help="Comma-separated synthetic homeworks.")
@click.option("--submissions", "n", type=click.IntRange(4), default=200, show_default=True,
              help="Submissions per homework.")
@click.option("--copies", type=click.IntRange(1), default=30, show_default=True, help="How many are copies.")
@click.option("--noise", type=AutoInts(), default=str(DEFAULT_NOISE), show_default=True,
              help="k values to try (comma-separated).")
@click.option("--max-share", "max_share", type=AutoInts(), default="auto", show_default=True,
              help="Common-code cut-offs to try (comma-separated; 0 = off; auto = N/20 clamped to 5..10).")
@click.option("--threshold", type=finite(0, 1), default=DEFAULT_THRESHOLD, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rows here.")
@user_errors
def main(homeworks, n, copies, noise, max_share, threshold, seed, json_path) -> None:
    """Time and ranking quality of the similarity command on synthetic classes with known copies.

    \b
    Examples:
      python benchmarks/bench_similarity.py
      python benchmarks/bench_similarity.py --submissions 24 --copies 8 --noise 15,20,25,30 --max-share 0,10
    """
    if copies * 2 > n:
        raise UserError(f"--copies {copies}: at most half the submissions ({n // 2}) can be copies")
    if None in noise or min(noise) < 1:
        shown = ",".join("auto" if k is None else str(k) for k in noise)
        raise UserError(f"--noise {shown}: k values are integers >= 1 (auto is for --max-share)")
    rows = []
    head = ["homework", "N", "k", "max share", "time s", "min copy", "max indep", "P@k", "R@k", "R@2k", "P@t", "R@t",
            "separated"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for hw in homeworks:
        with tempfile.TemporaryDirectory(prefix="bench-similarity-") as tmp:
            students, _, sid_of = make_class(hw, n, copies, Path(tmp) / "zips", seed)
            for k in noise:
                for m in max_share:
                    r = run_one(hw, Path(tmp) / "zips", Path(tmp) / f"out-{k}-{m}", students, sid_of, k, m,
                                threshold)
                    rows.append(r)
                    rates = [f"{r[c]:.2f}" for c in ("p_at_k", "r_at_k", "r_at_2k", "p_at_t", "r_at_t")]
                    cells = [hw, r["n"], k, r["max_share"], f"{r['seconds']:.1f}", f"{r['min_copy']:.3f}",
                             f"{r['max_indep']:.3f}", *rates, r["separated"]]
                    print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    if json_path:
        write_json_atomic(json_path, rows)


if __name__ == "__main__":
    main()
