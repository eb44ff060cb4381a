"""grading.markers: regions found as comments, stubs that raise, bodies taken back out and grafted."""

import ast

import pytest

from grading import markers

SOURCE = '''import torch


def f(x):
    """Mentions the marker in a docstring:
    # BEGIN SOLUTION not-a-region
    """
    y = x + 1
    # TODO: beta and gamma (Formula 9)
    # BEGIN SOLUTION f-beta
    beta = y * 2
    gamma = beta + 1
    scratch = 3
    # END SOLUTION
    return beta + gamma


def g(x):
    # TODO: return x squared
    # BEGIN SOLUTION g-sq
    return torch.square(x)
    # END SOLUTION
'''


def _run(text: str, name: str, *args):
    scope: dict = {}
    exec(compile(text, "<test>", "exec"), scope)  # our own fixture text, not user input
    return scope[name](*args)


def test_regions_are_comments_with_ids_hints_and_defines():
    regions = markers.find_regions(SOURCE, "a.py")
    assert [r.id for r in regions] == ["f-beta", "g-sq"]
    f_beta = regions[0]
    assert (f_beta.begin, f_beta.end, f_beta.indent) == (10, 14, "    ")
    assert f_beta.hint == "beta and gamma (Formula 9)"
    assert f_beta.defines == ("beta", "gamma")  # scratch is not read later
    assert f_beta.body == "    beta = y * 2\n    gamma = beta + 1\n    scratch = 3\n"


def test_strip_gives_a_parsing_starter_whose_stubs_raise_with_the_id():
    starter = markers.strip(SOURCE, "a.py")
    ast.parse(starter)
    assert "torch.square" not in starter and "beta = y * 2" not in starter
    assert "# BEGIN TODO g-sq" in starter and "# END TODO g-sq" in starter
    with pytest.raises(NotImplementedError, match=r"TODO f-beta: beta and gamma \(Formula 9\)"):
        _run(starter, "f", 1)


def test_extract_then_graft_round_trip_and_outside_edits():
    starter = markers.strip(SOURCE, "a.py")
    filled = starter.replace('    raise NotImplementedError("TODO g-sq: return x squared")\n', "    return x * x\n")
    got = markers.extract(filled.replace("\n", "\r\n"), starter)  # CRLF from a Windows editor
    assert got.missing == () and not got.outside_edited
    assert got.bodies["g-sq"] == "    return x * x\n"
    grafted = markers.graft(SOURCE, "a.py", {"g-sq": got.bodies["g-sq"]})
    assert _run(grafted, "g", 3) == 9
    with pytest.raises(NotImplementedError):  # a region not given gets the stub, never the reference
        _run(grafted, "f", 1)
    edited = markers.extract(filled.replace("y = x + 1", "y = x + 2"), starter)
    assert edited.outside_edited
    diff = markers.outside_diff(filled.replace("y = x + 1", "y = x + 2"), starter, "a.py")
    assert "-    y = x + 1" in diff and "+    y = x + 2" in diff and "return x * x" not in diff


def test_reference_bodies_graft_back_to_the_reference():
    bodies = markers.reference_bodies(SOURCE, "a.py")
    assert markers.graft(SOURCE, "a.py", bodies) == SOURCE


def test_missing_or_reordered_markers_are_reported_missing():
    starter = markers.strip(SOURCE, "a.py")
    no_end = starter.replace("    # END TODO g-sq\n", "")
    assert markers.extract(no_end, starter).missing == ("g-sq",)
    twice = starter + "# BEGIN TODO f-beta\n# END TODO f-beta\n"
    assert "f-beta" in markers.extract(twice, starter).missing


@pytest.mark.parametrize("bad, message", [
    (SOURCE.replace("# BEGIN SOLUTION g-sq", "# BEGIN SOLUTION"), "needs an id"),
    (SOURCE.replace("# BEGIN SOLUTION g-sq", "# BEGIN SOLUTION G_sq"), "needs an id"),
    (SOURCE.replace("    # END SOLUTION\n    return beta", "    return beta"), "inside the region"),
    (SOURCE.replace("    # TODO: return x squared\n", ""), "TODO"),
    (SOURCE + "# END SOLUTION\n", "without a BEGIN"),
    (SOURCE + "    # TODO: x\n    # BEGIN SOLUTION h-open\n", "never closed"),
])
def test_malformed_markers_raise_one_clear_error(bad, message):
    with pytest.raises(markers.MarkerError, match=message):
        markers.find_regions(bad, "a.py")
