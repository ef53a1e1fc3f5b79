import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """The CPU is shared: one torch thread is faster than an oversubscribed pool and reduces in one order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
