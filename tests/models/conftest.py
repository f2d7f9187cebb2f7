"""Model tests run single-threaded.

Measured on the 2-core CI box while other work runs: small convolutions take ~0.15 ms with
one intra-op thread and ~35 ms with two (OpenMP threads wait on a busy core). The setting is
restored after each test so other directories are unaffected.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
