"""ImageNet-style folders: ``root/train/<class>/*.jpg`` and ``root/val/<class>/*``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder

from stitching.data.base import ImageDataModule
from stitching.data.transforms import build_transforms, resolve_data_config


class _FixedClassesFolder(ImageFolder):
    """An ImageFolder whose class list is given, so every split maps a class name to the same index."""

    def __init__(self, root: str, classes: list[str], **kwargs: Any) -> None:
        self._classes = classes
        super().__init__(root, allow_empty=True, **kwargs)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self._classes, {c: i for i, c in enumerate(self._classes)}


class ImageFolderDataModule(ImageDataModule):
    """Train/val(/test) image folders; classes are the sub-folders of ``root/train_dir``, sorted.

    ``test_dir`` defaults to ``val_dir`` (ImageNet has no public test labels, so its val set is the test set).
    Preprocessing comes from timm's data config of ``model_name`` or ``data_config``; without either, timm's
    defaults at ``image_size`` (ImageNet mean/std, resize then centre crop at crop_pct 0.875).
    """

    def __init__(
        self,
        root: str,
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        model_name: str | None = None,
        data_config: dict[str, Any] | None = None,
        image_size: int = 224,
        augment: bool = True,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.save_hyperparameters()
        train_root = Path(root) / train_dir
        if not train_root.is_dir():
            raise FileNotFoundError(
                f"image folder {train_root} not found (expected {train_root}/<class>/*.jpg)"
            )
        self.classes = sorted(p.name for p in train_root.iterdir() if p.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"no class sub-folders in {train_root}")
        self.num_classes = len(self.classes)
        self.data_config = resolve_data_config(model_name, data_config) or resolve_data_config(
            data_config={"input_size": image_size}
        )

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        train_tf, eval_tf = build_transforms(self.data_config, self.hparams.augment, (), ())
        root = Path(self.hparams.root)
        test_dir = self.hparams.test_dir or self.hparams.val_dir
        self.data_train = _FixedClassesFolder(
            str(root / self.hparams.train_dir), self.classes, transform=train_tf
        )
        self.data_train_eval = _FixedClassesFolder(
            str(root / self.hparams.train_dir), self.classes, transform=eval_tf
        )
        self.data_val = _FixedClassesFolder(str(root / self.hparams.val_dir), self.classes, transform=eval_tf)
        self.data_test = _FixedClassesFolder(str(root / test_dir), self.classes, transform=eval_tf)
