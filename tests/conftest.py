import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use tiny models: one intra-op thread is faster than two fighting over small convolutions.

    (On a loaded 2-core machine two threads ran tiny convolutions 10-100x slower.) Tests that need more
    set it themselves; the previous count is restored after each test.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
