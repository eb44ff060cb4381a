"""grading.submission: safe loading of zips, folders and Gradescope exports; one problem line per bad thing."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from grading.submission import Limits, find_region_files, load_submissions, parse_name

CODE = "def f(x):\r\n    return x + 1\r\n"  # CRLF kept byte for byte


def _zip(path: Path, files: dict[str, bytes | str], special: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, mode in (special or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 3, mode << 16
            zf.writestr(info, "/etc/passwd")
    return path


def _outside(tmp_path: Path, dest: Path) -> list[str]:
    """Files written anywhere under tmp_path but outside dest and the inputs folder."""
    return [str(p) for p in tmp_path.rglob("*") if p.is_file() and dest not in p.parents and "in" not in p.parts]


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "in").mkdir()
    return tmp_path / "in", tmp_path / "out"


def test_names_from_the_handout_patterns():
    assert parse_name("Kim Minji_20261234.zip") == ("Kim Minji", "20261234", None)
    assert parse_name("Kim_Min_ji_20261234.zip", "{name}_{sid}.zip") == ("Kim_Min_ji", "20261234", None)
    assert parse_name("0812345_lab3.zip") == ("", "0812345", None)
    assert parse_name("0812345_lab3.zip", "{sid}_lab3.zip") == ("", "0812345", None)
    name, sid, problem = parse_name("homework.zip", "{sid}_lab3.zip")
    assert sid == "homework" and "does not match" in problem


def test_good_zip_with_an_extra_top_folder_keeps_crlf(dirs):
    src, dest = dirs
    _zip(src / "Kim Minji_20261234.zip", {"hw/gan/loss.py": CODE, "hw/README.md": "x", "__MACOSX/._x": "junk"})
    (sub,) = load_submissions([src / "Kim Minji_20261234.zip"], dest)
    assert (sub.sid, sub.name, sub.problems) == ("20261234", "Kim Minji", [])
    assert sub.root == dest / "20261234" and not (sub.root / "__MACOSX").exists()
    files = find_region_files(sub, ["gan/loss.py"])
    assert files == {"gan/loss.py": CODE} and sub.problems == []


def test_unsafe_members_are_skipped_and_nothing_lands_outside(tmp_path, dirs):
    src, dest = dirs
    members = {"../evil.py": "x", "/abs.py": "x", "C:\\win.py": "x", "a/../../up.py": "x", "ok/fine.py": "x",
               "bad\x01name.py": "x"}
    special = {"link.py": stat.S_IFLNK | 0o777, "dev": stat.S_IFCHR | 0o666, "fifo": stat.S_IFIFO | 0o644}
    (sub,) = load_submissions([_zip(src / "A_1.zip", members, special)], dest)
    text = "\n".join(sub.problems)
    for word in ("zip slip", "absolute path", "is a link", "device or pipe", "control characters"):
        assert word in text, (word, text)
    assert all("\n" not in p for p in sub.problems)
    assert [p.relative_to(sub.root).as_posix() for p in sub.root.rglob("*") if p.is_file()] == ["ok/fine.py"]
    assert not _outside(tmp_path, dest)
    assert not any(p.is_symlink() for p in dest.rglob("*"))


@pytest.mark.parametrize("limits,files,word", [
    (Limits(max_total_mb=1, max_ratio=1e9), {"big.bin": b"\0" * (2 * 2**20)}, "over the 1 MB limit"),
    (Limits(), {"bomb.bin": b"\0" * (3 * 2**20)}, "compressed"),
    (Limits(max_files=3), {f"f{i}.py": "x" for i in range(5)}, "file limit"),
    (Limits(max_zip_mb=0.0001), {"a.py": os.urandom(4096)}, "MB limit"),
    (Limits(), {"export/submission_metadata.yml": "{}"}, "Gradescope export"),
])
def test_bombs_and_oversize_zips_are_rejected_whole(dirs, limits, files, word):
    src, dest = dirs
    (sub,) = load_submissions([_zip(src / "B_2.zip", files)], dest, limits=limits)
    assert sub.root is None and word in sub.problems[-1], sub.problems
    assert not (dest / "2").exists()


def test_corrupt_zips_and_bad_crc(dirs):
    src, dest = dirs
    (src / "C_3.zip").write_bytes(b"PK\x03\x04 not really a zip")
    good = _zip(src / "D_4.zip", {"a.py": "print('hello world')\n" * 50})
    raw = bytearray(good.read_bytes())
    raw[40] ^= 0xFF  # inside the compressed data of a.py
    good.write_bytes(bytes(raw))
    subs = load_submissions([src / "C_3.zip", good], dest)
    assert [s.root for s in subs] == [None, None]
    assert all("corrupt" in s.problems[-1] for s in subs), [s.problems for s in subs]
    assert list(dest.iterdir()) == []


def test_names_that_are_not_utf8_are_decoded_safely(dirs):
    src, dest = dirs
    path = _zip(src / "E_5.zip", {"XX.py": "x = 1\n", "utf8_\u00e9.py": "y = 2\n"})
    path.write_bytes(path.read_bytes().replace(b"XX.py", b"\xb0\xa1.py"))  # cp949 bytes, no UTF-8 flag
    (sub,) = load_submissions([path], dest)
    assert sub.root is not None and "not UTF-8" in sub.problems[0]
    names = sorted(p.name for p in sub.root.iterdir())
    assert names == ["utf8_\u00e9.py", "\ufffd\ufffd.py"]


def test_folders_are_copied_without_links_or_special_files(tmp_path, dirs):
    src, dest = dirs
    student = src / "Lee_777"
    (student / "gan").mkdir(parents=True)
    (student / "gan" / "loss.py").write_text("\ufeffx = 1\n", encoding="utf-8")
    (student / "gan" / "augment.py").write_bytes(b"\xff\xfe not utf8")
    (student / "secret.py").symlink_to("/etc/passwd")
    os.mkfifo(student / "pipe")
    with open(os.fsencode(student) + b"/\xff\xfe.py", "w") as fh:  # a name that is not UTF-8
        fh.write("x")
    (sub,) = load_submissions([student], dest)
    assert sub.sid == "777" and sub.root == dest / "777"
    assert {"'secret.py' is a link; skipped", "'pipe' is a device, pipe or socket; skipped"} <= set(sub.problems)
    assert any("is not a UTF-8 name; skipped" in p for p in sub.problems)
    assert sorted(p.name for p in sub.root.iterdir()) == ["gan"]
    files = find_region_files(sub, ["gan/loss.py", "gan/augment.py", "gan/missing.py"])
    assert files == {"gan/loss.py": "x = 1\n"}  # BOM dropped
    assert any("augment.py is not UTF-8" in p for p in sub.problems)
    assert "gan/missing.py is missing" in sub.problems
    assert not _outside(tmp_path, dest)


def test_collection_folder_export_and_bad_paths(dirs):
    src, dest = dirs
    _zip(src / "Park_1001.zip", {"gan/loss.py": "a = 1\n"})
    (src / "Choi_1002" / "gan").mkdir(parents=True)
    (src / "Choi_1002" / "gan" / "loss.py").write_text("b = 2\n")
    (src / "notes.txt").write_text("ignored")
    export = src.parent / "export"
    (export / "submission_11").mkdir(parents=True)
    (export / "submission_11" / "loss.py").write_text("c = 3\n")
    (export / "submission_12").mkdir()
    _zip(export / "submission_12" / "upload.zip", {"gan/loss.py": "d = 4\n"})
    (export / "submission_metadata.yml").write_text(
        "submission_11:\n  :submitters:\n  - :name: Han Solo\n    :sid: '2001'\n    :email: h@x.edu\n"
        "  :score: !ruby/object:BigDecimal 18:0.1e2\n"
        "submission_12:\n  :submitters:\n  - :name: A\n    :sid: '2002'\n  - :name: B\n    :sid: '2003'\n")
    (src.parent / "empty").mkdir()
    subs = load_submissions([src, export, src.parent / "empty", src.parent / "nope.zip"], dest)
    assert [(s.sid, s.name) for s in subs] == [("1002", "Choi"), ("1001", "Park"), ("2001", "Han Solo"),
                                               ("2002+2003", "A, B"), ("nope.zip", "")]
    assert subs[-1].problems == ["not found"] and subs[-1].root is None
    assert subs[3].members == (("A", "2002"), ("B", "2003"))
    texts = [find_region_files(s, ["gan/loss.py"]).get("gan/loss.py") for s in subs]
    assert texts == ["b = 2\n", "a = 1\n", "c = 3\n", "d = 4\n", None]
    assert subs[2].problems == ["gan/loss.py found at loss.py"]
    assert load_submissions([src.parent / "empty"], dest) == []


def test_duplicate_ids_get_unique_keys(dirs):
    src, dest = dirs
    _zip(src / "Kim_1.zip", {"a.py": "x"})
    (src / "again").mkdir()
    _zip(src / "again" / "Kim_1.zip", {"a.py": "y"})
    subs = load_submissions([src / "Kim_1.zip", src / "again" / "Kim_1.zip"], dest)
    assert [s.key for s in subs] == ["1", "1-2"] and [s.sid for s in subs] == ["1", "1"]


def test_region_files_of_a_real_homework_under_its_zip_root(dirs):
    homeworks = pytest.importorskip("grading.homeworks")
    hw = homeworks.get_homework("umich-hw5-gan")  # zip_root "GAN", regions in gan/loss.py and gan/augment.py
    src, dest = dirs
    _zip(src / "Kim_Minji_20261234_hw5_gan.zip", {"GAN/gan/loss.py": CODE, "GAN/log.txt": "x"})
    (sub,) = load_submissions([src / "Kim_Minji_20261234_hw5_gan.zip"], dest, zip_name=hw.zip_name)
    assert (sub.name, sub.sid) == ("Kim_Minji", "20261234")
    assert find_region_files(sub, hw) == {"gan/loss.py": CODE}
    assert sub.problems == ["gan/augment.py is missing"]


def test_single_takes_a_folder_as_one_submission(dirs):
    src, dest = dirs
    upload = src / "submission"  # Gradescope's unpacked upload: two top folders, so not obviously one tree
    (upload / "GAN" / "gan").mkdir(parents=True)
    (upload / "GAN" / "gan" / "loss.py").write_text("x = 1\n")
    (upload / "images").mkdir()
    assert len(load_submissions([upload], dest / "guess")) == 2  # read as a folder of two submissions
    (sub,) = load_submissions([upload], dest / "one", single=True)
    assert find_region_files(sub, ["gan/loss.py"], zip_root="GAN") == {"gan/loss.py": "x = 1\n"}
