import os

import pytest
import torch

# Two cores: keep torch from oversubscribing when tests run in one process.
torch.set_num_threads(2)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
