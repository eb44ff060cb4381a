"""Bad input to the GAN tools: one line, exit code 2, nothing written."""

import pytest
from click.testing import CliRunner

from gan import augment_preview, dataset_tool, generate


@pytest.mark.parametrize("tool", ["generate", "dataset_tool", "augment_preview", "generate_not_safetensors"])
def test_tools_reject_bad_input_with_one_line(tmp_path, tool):
    missing = str(tmp_path / "missing")
    bogus = tmp_path / "ckpt.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    cases = {
        "generate": (generate.main, ["--checkpoint", missing + ".safetensors", "--out", str(tmp_path / "o")]),
        "generate_not_safetensors": (generate.main, ["--checkpoint", str(bogus), "--out", str(tmp_path / "o")]),
        "dataset_tool": (dataset_tool.main, ["--source", missing, "--dest", str(tmp_path / "d.zip")]),
        "augment_preview": (augment_preview.main, ["--data", missing, "--out", str(tmp_path / "p.png")]),
    }
    command, args = cases[tool]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0, result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "d.zip").exists() and not (tmp_path / "p.png").exists()
