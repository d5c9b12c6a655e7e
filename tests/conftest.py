"""Test-wide setup. Offline switches must be set before timm, huggingface_hub or wandb are imported."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("STITCHING_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "test"))

import pytest
import torch

pytest_plugins = ["slurm_cluster"]  # the session-wide single-host SLURM fixture (skips without SLURM)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
