import sys
sys.path.insert(0, "tests/grading")
import test_cases_distillation as T
from grading.compare import score_case

def test_summary(runs):
    for mid, (module, m) in sorted(T.MISTAKES.items()):
        short = module.rsplit(".", 1)[-1]
        exp, _ = runs[f"{short}-reference-0"]
        got, st = runs[f"mistake-{mid}-0"]
        row = []
        for cid, case in T.CASES[module].items():
            r = score_case(case, exp[cid], got.get(cid), st.get(cid, "no"))
            row.append(f"{cid.split('/')[1]}={r.fraction:g}({r.max_rel_err if r.max_rel_err is None else f'{r.max_rel_err:.0e}'})")
        print(mid, " ".join(row))
    for name in T.EQUIVALENT:
        module = T.EQUIVALENT[name][0]; short = module.rsplit(".", 1)[-1]
        exp, _ = runs[f"{short}-reference-0"]; got, st = runs[f"equivalent-{name}-0"]
        print(name, max(score_case(c, exp[cid], got.get(cid), st.get(cid)).max_rel_err for cid, c in T.CASES[module].items()))
