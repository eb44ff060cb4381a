"""Shared fixtures of the distillation tests."""

import pytest
from distill_helpers import one_thread


@pytest.fixture(autouse=True)
def _single_thread():
    """Every distillation test runs its tiny models on one intra-op thread (see ``one_thread``)."""
    with one_thread():
        yield
