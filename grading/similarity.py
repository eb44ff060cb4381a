"""``python -m grading similarity``: rank pairs of submissions by how much student-written region code they share.

Only the bodies of the homework's TODO regions are compared: each submission's bodies are taken out with
``grading.markers.extract`` against the starter (``markers.strip`` of the repo's reference files), cleaned (an ast
round trip drops comments, docstrings, redundant parentheses and layout) and written as one small ``.py`` file per
submission. copydetect (winnowing over k-grams of pygments tokens with identifiers masked, Schleimer et al. SIGMOD
2003) compares every pair and every submission against optional reference folders. Two kinds of k-gram never
count: those of the starter files (copydetect's boilerplate) and those found in more than ``max_share``
submissions (common code, MOSS's and Dolos' ``-m``): many students writing ``F.softplus(-x)`` is no evidence.

Score of a pair of submissions a, b: (o_a + o_b) / (n_a + n_b + 50), where n is a file's token count after those
removals and o its tokens inside shared k-grams (JPlag's AVG, Dolos' similarity; the 50-token pseudo-count keeps a
nearly empty file from scoring high). Against a reference file only the submission side counts: o_a / (n_a + 25).
All k-grams are kept (window 1), so results do not depend on Python's hash seed. Scores are triage for a human,
never proof (the MOSS page says as much). Measured on synthetic classes (``benchmarks/bench_similarity.py``): at 200
submissions copies rank above every independent pair or nearly (P@k 0.97-1.00); without the ast cleaning P@k is
0.73-0.77, without the common-code filter 0.93.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click

from common.cli import UserError, finite, user_errors
from grading import markers
from grading.similarity_report import write_report
from grading.submission import Submission, find_region_files, load_submissions, reference_files
from grading.unpack import Limits

DEFAULT_THRESHOLD = 0.5  # benchmarks/bench_similarity.py: flags every copy (R@t 1.00) at P@t 0.88-1.00
DEFAULT_NOISE = 25  # k, in characters of copydetect's filtered token string
DEFAULT_MAX_SHARE = None  # auto: k-grams in more than clamp(N / 20, 5, 10) of N submissions are common code
PRIOR_TOKENS = 50  # pseudo-count in the score's denominator: a nearly empty document cannot score high
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 119}  # as grading.cli (no import cycle)


@dataclass(frozen=True)
class Document:
    """The code of one submission (its region bodies) or of one reference file, as copydetect will read it."""

    key: str
    label: str
    kind: str  # "submission" or "ref"
    text: str


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    kind: str  # "peer" (two submissions) or "ref" (a submission and a reference file)
    score: float
    sim_a: float  # share of a's tokens found in b
    sim_b: float
    tokens: int  # overlapping tokens on a's side


def clean_code(text: str) -> str:
    """Python source without comments, docstrings or layout (``ast.unparse``); dedented text if it does not parse.

    A region body sits inside a function, so it is parsed as is (``return`` parses at module level) or, when its
    continuation lines are less indented than its first line, wrapped in a ``def``.
    """
    dedented = textwrap.dedent(text)
    for source, wrapped in ((dedented, False), ("def _region():\n" + textwrap.indent(dedented, "    "), True)):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list):
                body[:] = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                                   and isinstance(s.value.value, str))] or [ast.Pass()]
        statements = tree.body[0].body if wrapped else tree.body
        return "".join(ast.unparse(s) + "\n" for s in statements)
    return dedented


def region_document(files: dict[str, str], starters: dict[str, str], order: tuple[str, ...]) -> tuple[str, list[str]]:
    """One submission's compared code: each implemented region's cleaned body after a ``# region <id>`` line.

    Bodies equal to the starter's stub are left out (not implemented). A file whose markers are missing or broken
    is compared whole (the starter, as boilerplate, removes what was not changed), with a problem line.
    """
    sections: dict[str, str] = {}
    problems, whole = [], []
    for rel, starter in starters.items():
        if rel not in files:
            continue
        got, stubs = markers.extract(files[rel], starter), markers.extract(starter, starter).bodies
        missing = [r for r in got.missing if not order or r in order]
        if missing:  # the file's bodies cannot be told apart: compare all of it (its regions would count twice)
            problems.append(f"{rel}: markers of {', '.join(missing)} missing or broken; whole file compared")
            whole.append(f"# file {rel}\n{clean_code(markers.normalise(files[rel]))}")
            continue
        for rid, body in got.bodies.items():
            if order and rid not in order:
                continue  # a region of the file that is not part of this homework
            if markers.normalise(body) != markers.normalise(stubs[rid]) and body.strip():
                sections[rid] = f"# region {rid}\n{clean_code(body)}"
    ordered = [sections[r] for r in order if r in sections] + [v for r, v in sections.items() if r not in order]
    return "\n".join(ordered + whole), problems


def _submission_documents(subs: list[Submission], starters: dict[str, str], order: tuple[str, ...],
                          kind: str, prefix: str = "", zip_root: str = "") -> tuple[list[Document],
                                                                                 dict[str, list[str]]]:
    docs, problems = [], {}
    for sub in subs:
        files = find_region_files(sub, list(starters), zip_root=zip_root)
        text, notes = region_document(files, starters, order) if files else ("", [])
        if kind == "ref" and not files and sub.root is not None:  # public code: every .py file as it is
            for path in sorted(p for p in sub.root.rglob("*.py") if p.is_file())[:2000]:
                if path.stat().st_size > Limits.max_text_mb * 2**20:
                    continue
                code = path.read_bytes().decode("utf-8", errors="replace")
                rel = path.relative_to(sub.root).as_posix()
                docs.append(Document(f"{prefix}{sub.key}/{rel}", f"{prefix}{sub.key}/{rel}", kind, clean_code(code)))
            continue
        if not text.strip():
            notes += [] if sub.root is None else ["no implemented region found; not compared"]
        else:
            docs.append(Document(prefix + sub.key, prefix + sub.label, kind, text))
        who = prefix + sub.label
        problems[who if who not in problems else f"{who} [{sub.key}]"] = sub.problems + notes
    return docs, problems


def auto_max_share(n: int) -> int:
    """The default common-code cut-off for ``n`` submissions: n / 20 clamped to [5, 10] (MOSS's ``-m`` is 10)."""
    return max(5, min(10, n // 20))


def _common_hashes(files: list[str], boilerplate: list[str], noise: int, max_share: int | None):
    """Fingerprints (starter removed) found in more than ``max_share`` of ``files``: code that many students write
    the same way is no evidence of copying, so it is removed like the starter (MOSS's and Dolos' ``-m``)."""
    import numpy as np
    from copydetect import CodeFingerprint

    if max_share is None:
        max_share = auto_max_share(len(files))
    if not max_share or len(files) <= max_share:
        return np.array([], dtype=np.int64)
    starter = np.unique(np.array([h for f in boilerplate for h in CodeFingerprint(f, noise, 1, language="python")
                                  .hashes], dtype=np.int64))
    counts = Counter()
    for f in files:
        counts.update(CodeFingerprint(f, noise, 1, boilerplate=starter, language="python").hashes)
    return np.array(sorted(h for h, c in counts.items() if c > max_share), dtype=np.int64)


def _detector(extra_boilerplate):
    """copydetect's CopyDetector whose boilerplate fingerprints also hold ``extra_boilerplate``."""
    import numpy as np
    from copydetect import CopyDetector

    class Detector(CopyDetector):
        def _get_boilerplate_hashes(self):  # copydetect 0.5: the one place boilerplate hashes are gathered
            return np.unique(np.concatenate([super()._get_boilerplate_hashes().astype(np.int64), extra_boilerplate]))

    return Detector


def compare(docs: list[Document], boilerplate: list[str], work: Path, noise: int = DEFAULT_NOISE,
            max_share: int | None = DEFAULT_MAX_SHARE) -> tuple[list[Pair], object, dict[str, str]]:
    """Every submission pair and submission x reference pair, best first; the CopyDetector and each document's
    file (for the report)."""
    for folder in ("submissions", "refs", "boilerplate"):
        (work / folder).mkdir(parents=True, exist_ok=True)
        for old in (work / folder).glob("*.py"):  # a previous run's files
            old.unlink()
    paths = {}
    for n, doc in enumerate(docs):
        folder = "submissions" if doc.kind == "submission" else "refs"
        path = work / folder / f"{n:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '-', doc.key)[:100]}.py"
        path.write_text(doc.text, encoding="utf-8")
        paths[doc.key] = str(path)
    bp_files = []
    for i, text in enumerate(boilerplate):
        bp_files.append(str(work / "boilerplate" / f"starter_{i}.py"))
        Path(bp_files[-1]).write_text(text, encoding="utf-8")
    common = _common_hashes([paths[d.key] for d in docs if d.kind == "submission"], bp_files, noise, max_share)
    det = _detector(common)(test_dirs=[], noise_t=noise, guarantee_t=noise, display_t=0.0, force_language="python",
                            silent=True, autoopen=False, out_file=str(work / "copydetect.html"))
    for f in bp_files:
        det.add_file(f, "boilerplate")
    for doc in docs:
        det.add_file(paths[doc.key], "testref" if doc.kind == "submission" else "ref")
    det.run()
    index_t = {f: i for i, f in enumerate(det.test_files)}
    index_r = {f: j for j, f in enumerate(det.ref_files)}
    cover = {f: float(fp.token_coverage) for f, fp in det.file_data.items()}
    subs = [d for d in docs if d.kind == "submission"]
    pairs = []
    for i, a in enumerate(subs):
        for b in subs[i + 1:] + [d for d in docs if d.kind == "ref"]:
            fa, fb = paths[a.key], paths[b.key]
            sim_a, sim_b = (float(v) for v in det.similarity_matrix[index_t[fa], index_r[fb]])
            if sim_a < 0:  # copydetect skipped it (a file it could not read)
                continue
            o_a, o_b = sim_a * cover[fa], sim_b * cover[fb]  # shared tokens that are neither starter nor common
            if b.kind == "ref":
                score = o_a / (cover[fa] + PRIOR_TOKENS / 2)
            else:
                score = (o_a + o_b) / (cover[fa] + cover[fb] + PRIOR_TOKENS)
            pairs.append(Pair(a.key, b.key, "ref" if b.kind == "ref" else "peer", round(score, 4), round(sim_a, 4),
                              round(sim_b, 4), int(round(o_a))))
    pairs.sort(key=lambda p: (-p.score, -p.tokens, p.a, p.b))
    return pairs, det, paths


def _homework(homework_id: str):
    try:
        from grading.homeworks import get_homework
    except ImportError as err:
        raise UserError(f"unknown homework {homework_id!r}: no homework specs yet ({err})") from None
    try:
        return get_homework(homework_id)
    except (KeyError, LookupError, ValueError) as err:
        raise UserError(f"unknown homework {homework_id!r} ({str(err).strip(chr(39))})") from None


def run_similarity(homework, paths: list[Path], refs: list[Path], out: Path, threshold: float = DEFAULT_THRESHOLD,
                   noise: int = DEFAULT_NOISE, include_reference: bool = False, top: int = 50,
                   references: dict[str, str] | None = None,
                   max_share: int | None = DEFAULT_MAX_SHARE) -> tuple[list[Pair], dict[str, Document]]:
    """The whole command on a :class:`grading.spec.Homework`; ``references`` (relpath -> reference text) defaults to
    the repo files of the homework's packages. Raises UserError for bad input; returns the ranked pairs and the
    documents by key."""
    references = references or reference_files(homework.packages, homework.region_ids)
    if not references:
        raise UserError(f"no solution regions of {homework.id} found in {', '.join(homework.packages)}")
    starters = {rel: markers.strip(text, rel) for rel, text in references.items()}
    order = tuple(homework.region_ids)
    limits = Limits(max_zip_mb=homework.size_cap_mb or Limits.max_zip_mb)
    with tempfile.TemporaryDirectory(prefix="similarity-") as tmp:
        subs = load_submissions(paths, Path(tmp) / "submissions", zip_name=homework.zip_name, limits=limits)
        if not subs:
            raise UserError(f"no submissions found in {', '.join(map(str, paths))}")
        docs, problems = _submission_documents(subs, starters, order, "submission", zip_root=homework.zip_root)
        for n, ref in enumerate(refs):
            ref_subs = load_submissions([ref], Path(tmp) / f"ref{n}", limits=Limits(max_zip_mb=200, max_files=5000,
                                                                                     max_total_mb=500))
            more, notes = _submission_documents(ref_subs, starters, order, "ref", f"ref{n}:{ref.name}/",
                                                homework.zip_root)
            docs += more
            problems.update({k: v for k, v in notes.items() if v})
    if include_reference:
        bodies = {rid: body for rel, text in references.items() for rid, body in
                  markers.reference_bodies(text, rel).items()}
        docs.append(Document("reference", "reference solution", "ref",
                             "\n".join(f"# region {r}\n{clean_code(bodies[r])}" for r in order if r in bodies)))
    n_subs = sum(d.kind == "submission" for d in docs)
    if n_subs < 2 and not (n_subs == 1 and any(d.kind == "ref" for d in docs)):
        notes = "; ".join(f"{k}: {v[0]}" for k, v in problems.items() if v)[:300]
        raise UserError(f"need at least two submissions with implemented regions to compare, found {n_subs} of "
                        f"{len(subs)}" + (f" ({notes})" if notes else ""))
    boilerplate = [t for s in starters.values() for t in (s, clean_code(s))]
    out.mkdir(parents=True, exist_ok=True)  # only now: bad input leaves nothing behind
    pairs, det, files = compare(docs, boilerplate, out / "regions", noise, max_share)
    by_key = {d.key: d for d in docs}
    params = {"homework": homework.id, "noise": noise, "submissions": n_subs, "refs": len(docs) - n_subs,
              "max_share": auto_max_share(n_subs) if max_share is None else max_share}
    write_report(out, f"{homework.id}: similarity of TODO regions", pairs, by_key, det, files, threshold, problems,
                 top, params)
    return pairs, by_key


@click.command("similarity", context_settings=CONTEXT)
@click.argument("homework_id", metavar="HW")
@click.argument("paths", metavar="SUBMISSION...", nargs=-1, type=click.Path(path_type=Path))
@click.option("--ref", "refs", multiple=True, type=click.Path(path_type=Path),
              help="Reference folder (repeatable): past submissions (zips/folders) or public code (.py files).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Output folder: report.html, pairs.csv, summary.json, regions/ (the compared files).")
@click.option("--threshold", type=finite(0, 1), default=DEFAULT_THRESHOLD, show_default=True,
              help="Flag pairs whose score is at least this.")
@click.option("--noise", type=click.IntRange(8, 200), default=DEFAULT_NOISE, show_default=True,
              help="k-gram length in filtered characters: shorter shared runs are ignored.")
@click.option("--max-share", type=click.IntRange(0), default=None, show_default="N/20 clamped to 5..10",
              help="k-grams found in more than this many submissions count as common code, like the starter "
                   "(0: off).")
@click.option("--include-reference/--no-include-reference", default=False, show_default=True,
              help="Also compare against the repo's reference solution.")
@click.option("--top", type=click.IntRange(1), default=50, show_default=True,
              help="Pairs shown side by side in report.html when fewer are flagged.")
@user_errors
def similarity(homework_id, paths, refs, out, threshold, noise, max_share, include_reference, top) -> None:
    """Rank pairs of submissions by shared student-written code in the homework's TODO regions.

    SUBMISSION is a {NAME}_{SID}.zip / {SID}_lab3.zip, a student's folder, a folder of those, or a Gradescope
    export folder (submission_metadata.yml + one folder per submission). Only region bodies are compared, with the
    starter code as boilerplate; identifiers are masked, comments, docstrings and layout ignored. Prints one line
    per flagged pair.

    \b
    Examples:
      python -m grading similarity kaist-a4 submissions/ --out similarity/kaist-a4
      python -m grading similarity umich-hw5-gan subs/*.zip --ref past/2025 --out sim --threshold 0.6
      python -m grading similarity kaist-a5 gradescope_export/ --include-reference --out sim/a5
    """
    if not paths:
        raise UserError("give at least one SUBMISSION (a zip, a folder of submissions or a Gradescope export)")
    for path in list(paths) + list(refs):
        if not path.exists():
            raise UserError(f"not found: {path}")
        if not os.access(path, os.R_OK):
            raise UserError(f"cannot read {path}")
        if path.is_dir() and out.resolve().is_relative_to(path.resolve()):
            raise UserError(f"--out {out} lies inside {path}; choose a folder outside the submissions")
    homework = _homework(homework_id)
    pairs, docs = run_similarity(homework, list(paths), list(refs), out, threshold, noise, include_reference, top,
                                 max_share=max_share)
    flagged = [p for p in pairs if p.score >= threshold]
    for p in flagged:
        click.echo(f"flagged {p.score:.2f}  {docs[p.a].label} <-> {docs[p.b].label}  ({p.kind}; a in b {p.sim_a:.2f}, "
                   f"b in a {p.sim_b:.2f}, {p.tokens} tokens)")
    click.echo(f"{len(pairs)} pairs compared, {len(flagged)} flagged at >= {threshold:g}; see {out / 'report.html'}")
