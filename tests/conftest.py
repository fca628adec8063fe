import os

import pytest
import torch

# Tiny test models gain nothing from a second thread, and OpenMP threads that spin while
# another process (a subprocess test, a benchmark) holds the other core slow everything down.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by subprocess tests


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
