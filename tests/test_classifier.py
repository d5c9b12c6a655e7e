"""ClassifierModule: logged keys, checkpoint layout and reload, head-only fine-tuning, schedule."""

import lightning as L
import pytest
import torch

from stitching.data import DigitsDataModule
from stitching.modules import ClassifierModule
from stitching.zoo import ModelSource, load_model


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(batch_size=16)
    dm.setup()
    return dm


def test_logs_the_documented_keys(tmp_path, digits, quick_trainer):
    module = ClassifierModule("test_resnet", num_classes=10)
    trainer = quick_trainer()
    trainer.fit(module, digits)
    keys = set(trainer.callback_metrics)
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "val/acc_top5"} <= keys
    (result,) = trainer.test(module, digits, verbose=False)
    assert {"test/acc", "test/acc_top5", "test/loss"} <= set(result)
    # The logged scores are those of the module's own predictions on the one test batch it was limited to.
    x, y = next(iter(digits.test_dataloader()))
    with torch.no_grad():
        logits = module.eval()(x)
    top1 = (logits.argmax(1) == y).float().mean().item()
    top5 = (logits.topk(5, dim=1).indices == y[:, None]).any(1).float().mean().item()
    assert result["test/acc"] == pytest.approx(top1, abs=1e-6)
    assert result["test/acc_top5"] == pytest.approx(top5, abs=1e-6) and top5 >= top1


def test_no_top5_with_few_classes():
    module = ClassifierModule("test_resnet", num_classes=4)
    assert set(module.val_metrics) == {"acc"}


def test_checkpoint_reload_reproduces_predictions(tmp_path, digits, quick_trainer):
    module = ClassifierModule("test_resnet", num_classes=10)
    trainer = quick_trainer()
    trainer.fit(module, digits)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["model_name"] == "test_resnet"
    assert all(k.startswith("model.") for k in ckpt["state_dict"] if "metrics" not in k and "best" not in k)
    x = digits.data_test.images[:16]
    module.eval()
    with torch.no_grad():
        expected = module(x)
        reloaded = ClassifierModule.load_from_checkpoint(path).eval()(x)
        from_store = load_model(ModelSource("test_resnet", checkpoint=str(path)))(x)
        from_name_field = load_model(str(path))(x)
    torch.testing.assert_close(reloaded, expected)
    torch.testing.assert_close(from_store, expected)
    torch.testing.assert_close(from_name_field, expected)


def test_head_only_trains_the_classifier_alone(tmp_path, digits, quick_trainer):
    module = ClassifierModule("test_resnet", num_classes=10, head_only=True, lr=1e-2)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    quick_trainer().fit(module, digits)
    after = module.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BatchNorm buffers included: frozen parts stayed in eval


def test_cosine_schedule_with_warmup_reaches_zero(tmp_path, digits, quick_trainer):
    module = ClassifierModule("test_resnet", num_classes=10, lr=1e-2, warmup_epochs=1)
    lrs = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = quick_trainer(max_epochs=4, limit_train_batches=3, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(module, digits)
    assert lrs[0] == pytest.approx(1e-2 / 3)  # warmup: first of three steps
    assert max(lrs) == pytest.approx(1e-2)
    assert lrs[-1] < 1e-3
    peak = lrs.index(max(lrs))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))
