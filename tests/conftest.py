"""Test-wide setup. Offline switches must be set before timm, huggingface_hub or wandb are imported."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("STITCHING_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "test"))
# One thread everywhere, subprocesses and SLURM jobs included: tests run beside other work on 2 cores, and
# Lightning raises torch's thread count unless OMP_NUM_THREADS is set.
os.environ["OMP_NUM_THREADS"] = "1"

import lightning as L
import pytest
import torch
import yaml

# benchmarks/ holds the naive harness the speed tests compare with: `from straightforward import ...`
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytest_plugins = ["slurm_cluster"]  # the session-wide single-host SLURM fixture (skips without SLURM)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


TINY_TRAINING = """
model:
  class_path: stitching.modules.ClassifierModule
  init_args: {model_name: test_resnet}
data:
  class_path: stitching.data.DigitsDataModule
  init_args: {batch_size: 32, num_workers: 0}
trainer: {max_epochs: 1, limit_train_batches: 2, limit_val_batches: 1, limit_test_batches: 1,
          num_sanity_val_steps: 0, enable_progress_bar: false}
"""


@pytest.fixture
def tiny_recipe(tmp_path) -> str:
    """Path of a base-training config (``tiny.yaml``): two batches of timm's test_resnet on digits."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_TRAINING)
    return str(path)


@pytest.fixture
def quick_trainer(tmp_path):
    """A Lightning Trainer for a few batches, with nothing written but what a test asks for."""

    def make(**kwargs) -> L.Trainer:
        defaults = dict(
            max_epochs=1,
            limit_train_batches=2,
            limit_val_batches=1,
            limit_test_batches=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=tmp_path,
        )
        return L.Trainer(**{**defaults, **kwargs})

    return make


TINY_TRAIN = str(Path(__file__).parent / "data" / "train_tiny.yaml")


def _write_suite(path: Path, name: str = "tiny", **overrides) -> Path:
    suite = {
        "name": name,
        "version": "1",
        "dataset": {"class_path": "stitching.data.DigitsDataModule", "init_args": {"batch_size": 64}},
        "models": {
            "resnet": {"name": "mini_resnet", "train": TINY_TRAIN, "seeds": [0, 1]},
            "vit": {"name": "mini_vit", "train": TINY_TRAIN, "seeds": [0]},
        },
        "pairs": {"mode": "all", "include_self": False},
        "cuts": {"depths": [0.5]},
        "adapters": [{"norm": "bn"}],
        "inits": ["lstsq"],
        "recipe": {"epochs": 1, "batch_size": 128},
        "metrics": ["linear_cka", "mutual_knn"],
        "metric_samples": 200,
        **overrides,
    }
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.fixture
def write_suite():
    """``write_suite(path, name="tiny", **overrides) -> path``: a small suite YAML (digits; mini_resnet at
    seeds 0 and 1 and mini_vit, trained with ``tests/data/train_tiny.yaml``; one cut at depth 0.5)."""
    return _write_suite
