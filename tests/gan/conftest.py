import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny GAN tensors run faster single-threaded (OpenMP spin-waits dominate on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
