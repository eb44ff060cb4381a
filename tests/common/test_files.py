"""common.files: pickles are refused by content with one line; shipped weights are not overwritten by default."""

import pickle

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from common.cli import UserError
from common.files import REPO_ROOT, SHIPPED_DIRS, PickleRefused, check_overwrite, pickle_format, refuse_pickle
from common.registry import TOY_MODELS_DIR


def test_pickle_format_by_content_and_suffix(tmp_path):
    (tmp_path / "net.pkl").write_bytes(pickle.dumps({"G": [1, 2]}))  # the handout's kind of file (written, never read)
    torch.save({"w": torch.ones(2)}, tmp_path / "weights.bin")
    save_file({"w": torch.ones(2)}, str(tmp_path / "real.safetensors"))
    save_file({"w": torch.ones(2)}, str(tmp_path / "renamed.pt"))  # safetensors under a pickle suffix: fine
    (tmp_path / "empty.pkl").write_bytes(b"")
    assert pickle_format(tmp_path / "net.pkl") == "pickle"
    assert pickle_format(tmp_path / "weights.bin") == "torch.save zip"
    assert pickle_format(tmp_path / "real.safetensors") is None and pickle_format(tmp_path / "renamed.pt") is None
    assert pickle_format(tmp_path / "empty.pkl") == "pickle"
    with pytest.raises(PickleRefused) as info:
        refuse_pickle(tmp_path / "net.pkl", "use x.safetensors")
    message = info.value.format_message()
    assert "\n" not in message and "refused by design" in message and message.endswith("use x.safetensors")
    assert isinstance(info.value, ValueError) and info.value.exit_code == 2


def test_check_overwrite_only_guards_existing_shipped_weights(tmp_path):
    shipped = tmp_path / "models"
    (shipped / "toy-sd").mkdir(parents=True)
    check_overwrite(tmp_path / "outputs" / "toy-sd", force=False, shipped=[shipped])  # elsewhere: fine
    check_overwrite(shipped / "toy-new", force=False, shipped=[shipped])  # nothing there yet: fine
    check_overwrite(shipped / "toy-sd", force=True, shipped=[shipped])
    with pytest.raises(UserError, match="would overwrite weights shipped in .*--force"):
        check_overwrite(shipped / "toy-sd", force=False, shipped=[shipped])
    assert all(d.is_dir() for d in SHIPPED_DIRS)


@pytest.mark.parametrize("cli", ["train_sd", "toy_train", "gan"])
def test_trainers_refuse_the_shipped_weights_without_force(cli):
    from common.toy import __main__ as toy_main
    from common.toy import train_sd
    from gan import make_toy_checkpoint

    models = TOY_MODELS_DIR
    main, args = {"train_sd": (train_sd.main, ["--out", str(models / "toy-sd")]),
                  "toy_train": (toy_main.main, ["train", "clip", "--out", str(models / "toy-clip")]),
                  "gan": (make_toy_checkpoint.main, ["--out", str(make_toy_checkpoint.SHIPPED)])}[cli]
    result = CliRunner().invoke(main, args + ["--device", "cpu"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "would overwrite weights shipped" in result.output and "--force" in result.output


def test_trainers_default_to_outputs():
    from common.toy import train_sd
    from gan import make_toy_checkpoint

    defaults = {p.name: p.default for p in train_sd.main.params} | {
        "gan_out": next(p.default for p in make_toy_checkpoint.main.params if p.name == "out")}
    assert defaults["out"] == "outputs/toy-sd" and defaults["gan_out"].startswith("outputs")


def test_default_output_roots_are_ignored_by_git():
    ignored = (REPO_ROOT / ".gitignore").read_text().split()
    assert "outputs/" in ignored and "runs/" in ignored  # gan.train / toy_bar / make_toy_checkpoint write runs/
