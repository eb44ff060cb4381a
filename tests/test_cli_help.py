"""Every ``python -m <module>`` CLI answers -h and --help with its usage and an Examples section (issue #20)."""

from __future__ import annotations

import importlib

import click
import pytest
from click.testing import CliRunner

CLIS = ["common.eval.__main__", "common.toy.__main__", "common.toy.measure_sd", "common.toy.train_sd",
        "ddpm_ddim.main", "ddpm_ddim.measure", "distillation.evaluate", "distillation.main",
        "distillation.measure_toy", "distillation.schedules", "dps.main", "dps.measure", "gan.augment_preview",
        "gan.dataset_tool", "gan.generate", "gan.make_toy_checkpoint", "gan.toy_bar", "gan.train",
        "synchronization.evaluate", "synchronization.main", "synchronization.measure_toy"]


def _prefixes(main: click.Command) -> list[list[str]]:
    """argv prefixes of the command and, for a group, of each subcommand."""
    return [[]] + ([[name] for name in main.commands] if isinstance(main, click.Group) else [])


@pytest.mark.parametrize("module", CLIS)
def test_h_and_help_show_usage_and_examples(module):
    main = importlib.import_module(module).main
    for prefix in _prefixes(main):
        outputs = []
        for flag in ("-h", "--help"):
            result = CliRunner().invoke(main, prefix + [flag])
            assert result.exit_code == 0 and not result.exception, (module, prefix, flag, result.output)
            outputs.append(result.output)
        assert outputs[0] == outputs[1] and "Usage:" in outputs[0], (module, prefix)
        assert "Examples:" in outputs[0], f"{module} {' '.join(prefix)}: the help has no Examples section"
