"""Data modules on real loading code: bundled digits, fake CIFAR files (torchvision format), PNG folders."""

import hashlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100

from stitching.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
)
from stitching.data.digits import DIGITS_MEAN, DIGITS_STD
from stitching.data.transforms import RandomShift


def test_digits_split_is_stratified_seeded_and_recorded():
    dm = DigitsDataModule(split_seed=0)
    dm.setup()
    split = dm.split_indices
    assert sum(len(v) for v in split.values()) == 1797
    assert not set(split["train"]) & set(split["val"]) and not set(split["val"]) & set(split["test"])
    assert dm.hparams.split_sizes == {"train": 1257, "val": 270, "test": 270}
    assert dm.hparams.split_seed == 0 and dm.hparams.split_hash == dm.split_hash
    counts = torch.bincount(dm.data_test.labels, minlength=10)
    assert counts.min() >= 26 and counts.max() <= 28  # 270 images over ~180 per class: stratified
    assert DigitsDataModule(split_seed=0).split_hash == dm.split_hash
    assert DigitsDataModule(split_seed=1).split_hash != dm.split_hash


def test_digits_images_are_normalised_rgb_32():
    dm = DigitsDataModule(max_shift=0, batch_size=64)
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (64, 3, 32, 32) and y.dtype == torch.int64
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    everything = torch.cat([dm.data_train.images, dm.data_val.images, dm.data_test.images])
    assert everything.mean().item() == pytest.approx(0.0, abs=0.01)
    assert everything.std().item() == pytest.approx(1.0, abs=0.01)
    assert x.min().item() == pytest.approx(-DIGITS_MEAN / DIGITS_STD, abs=1e-5)  # background


def test_digits_augments_train_only():
    dm = DigitsDataModule(max_shift=3)
    dm.setup()
    a, b = dm.data_train[0][0], dm.data_train[0][0]
    shifted = [not torch.equal(dm.data_train[0][0], dm.data_train_eval[0][0]) for _ in range(10)]
    assert any(shifted) and a.shape == b.shape == (3, 32, 32)
    assert torch.equal(dm.data_val[0][0], dm.data_val[0][0])
    assert torch.equal(dm.eval_dataset("train")[0][0], dm.data_train_eval[0][0])
    with pytest.raises(ValueError, match="valid: train, val, test"):
        dm.eval_dataset("dev")


def test_random_shift_translates_with_fill():
    x = torch.arange(16.0).reshape(1, 4, 4)
    shift = RandomShift(2, fill=-1.0)
    for _ in range(20):
        y = shift(x)
        assert y.shape == x.shape
        # the original pixels survive as a shifted block; uncovered pixels are the fill value
        kept = y[y != -1.0]
        assert set(kept.tolist()) <= set(x.flatten().tolist())
        assert (y == -1.0).sum() + kept.numel() == 16


def _write_pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fake_images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """A 5x20 + 20 image CIFAR-10 in torchvision's layout.

    torchvision checks every file against hard-coded MD5s; the test patches the class's md5 lists with the
    sums of the files it wrote, so the real integrity check and loader run unchanged.
    """
    root = tmp_path / "data"
    folder = root / CIFAR10.base_folder
    train_list = []
    for i in range(1, 6):
        labels = [(i * 20 + j) % 10 for j in range(20)]
        md5 = _write_pickle(folder / f"data_batch_{i}", {"data": _fake_images(20, i), "labels": labels})
        train_list.append([f"data_batch_{i}", md5])
    test = {"data": _fake_images(20, 0), "labels": [j % 10 for j in range(20)]}
    test_md5 = _write_pickle(folder / "test_batch", test)
    meta_md5 = _write_pickle(folder / "batches.meta", {"label_names": [f"c{k}" for k in range(10)]})
    monkeypatch.setattr(CIFAR10, "train_list", train_list)
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", test_md5]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": meta_md5})
    return root, test


def test_cifar10_splits_and_preprocessing(fake_cifar10):
    root, test = fake_cifar10
    dm = CIFAR10DataModule(data_dir=str(root), val_size=20, split_seed=0, augment=False, batch_size=8)
    dm.setup()
    assert dm.num_classes == 10
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (80, 20, 20)
    assert dm.hparams.split_sizes == {"train": 80, "val": 20, "test": 20}
    assert not set(dm.split_indices["train"]) & set(dm.split_indices["val"])
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.tolist() == test["labels"][:8]
    # un-normalising gives back the stored pixels (CHW rows of the pickled uint8 array)
    mean, std = torch.tensor(dm.mean).view(3, 1, 1), torch.tensor(dm.std).view(3, 1, 1)
    pixels = torch.from_numpy(test["data"][0].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(x[0] * std + mean, pixels, atol=1e-5)
    other = CIFAR10DataModule(data_dir=str(root), val_size=20, split_seed=1)
    other.setup()
    assert not np.array_equal(other.split_indices["val"], dm.split_indices["val"])


def test_cifar_uses_timm_data_config(fake_cifar10):
    root, _ = fake_cifar10
    dm = CIFAR10DataModule(data_dir=str(root), val_size=10, data_config={"input_size": 48}, augment=True)
    dm.setup()
    assert dm.data_config["input_size"] == (3, 48, 48)
    assert dm.data_train[0][0].shape == dm.data_val[0][0].shape == (3, 48, 48)
    from_model = CIFAR10DataModule(data_dir=str(root), val_size=10, model_name="mini_resnet")
    assert from_model.data_config["input_size"] == (3, 32, 32)
    assert from_model.data_config["mean"] == (0.5, 0.5, 0.5)


def test_cifar_missing_files_name_the_fix(tmp_path):
    dm = CIFAR10DataModule(data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="download=true"):
        dm.setup()


def test_cifar100(tmp_path, monkeypatch):
    folder = tmp_path / CIFAR100.base_folder
    fine = [j % 100 for j in range(200)]
    train_md5 = _write_pickle(
        folder / "train", {"data": _fake_images(200, 1), "fine_labels": fine, "coarse_labels": [0] * 200}
    )
    test_md5 = _write_pickle(
        folder / "test", {"data": _fake_images(100, 2), "fine_labels": fine[:100], "coarse_labels": [0] * 100}
    )
    meta_md5 = _write_pickle(folder / "meta", {"fine_label_names": [f"f{k}" for k in range(100)]})
    monkeypatch.setattr(CIFAR100, "train_list", [["train", train_md5]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", test_md5]])
    monkeypatch.setattr(CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names", "md5": meta_md5})
    dm = CIFAR100DataModule(data_dir=str(tmp_path), val_size=100)
    dm.setup()
    assert dm.num_classes == 100
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (100, 100, 100)
    assert sorted(dm.data_val[i][1] for i in range(100)) == list(range(100))  # stratified: one per class


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, classes in (("train", "abc"), ("val", "ac")):  # val lacks class b
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / c / f"{i}.png")
    dm = ImageFolderDataModule(str(tmp_path), data_config={"input_size": 32}, batch_size=4)
    assert dm.num_classes == 3 and dm.classes == ["a", "b", "c"]
    dm.setup()
    assert len(dm.data_train) == 6 and len(dm.data_val) == len(dm.data_test) == 4
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 32, 32)
    assert y.tolist() == [0, 0, 2, 2]  # class c keeps its training index
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageFolderDataModule(str(tmp_path / "nowhere"))
