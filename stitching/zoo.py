"""The model store: ``ModelSource`` -> ``nn.Module`` from a timm name, pretrained weights, a checkpoint, or a
base model trained on first use (with a config from ``configs/train/``) and reused after.

Trained models live in ``$STITCHING_CACHE/zoo/<key>/`` (default ``~/.cache/stitching``): ``model.ckpt`` (a
Lightning checkpoint of ``ClassifierModule``), ``metrics.json`` (val/test accuracy, training time, versions)
and ``config.yaml`` (the resolved training config). ``key`` hashes that config, the seed, the model name and
the library versions. A file lock plus atomic writes, ``metrics.json`` last, make concurrent first use safe:
a model is in the store once its ``metrics.json`` is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning
import timm
import torch
import yaml
from filelock import FileLock
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn

import stitching
from stitching._utils import atomic_path, atomic_write, remove_stale_temporaries, stable_hash
from stitching.lightning_cli import StitchingCLI
from stitching.models import check_model_name, create_model, read_checkpoint
from stitching.nn import num_parameters

CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".safetensors")
REPO_ROOT = Path(__file__).resolve().parents[1]
# Settings that change how a run looks, not the weights it produces: left out of the store key.
_NOT_HASHED = {
    "trainer": (
        "logger",
        "enable_progress_bar",
        "enable_checkpointing",
        "enable_model_summary",
        "default_root_dir",
    ),
    "data.init_args": ("num_workers", "pin_memory"),
}


@dataclass
class ModelSource:
    """Where a model comes from; usable as a YAML mapping in LightningCLI configs.

    Args:
        name: A timm or ``mini_*`` model name, or a checkpoint path (the name is then read from it).
        pretrained: Load timm's pretrained weights (needs them cached or internet).
        checkpoint: Local weights: a Lightning checkpoint of ``ClassifierModule`` or a timm state dict.
        train: A base-training YAML (``configs/train/*.yaml``): train ``name`` on first use, then reuse.
        seed: Training seed with ``train``; initialisation seed for an untrained (random) model.
        model_kwargs: Extra ``create_model`` arguments (with ``train``: overrides the config's).
    """

    name: str
    pretrained: bool = False
    checkpoint: str | None = None
    train: str | None = None
    seed: int = 0
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.checkpoint is None and (self.name.endswith(CHECKPOINT_SUFFIXES) or os.path.isfile(self.name)):
            self.checkpoint, self.name = (
                self.name,
                _checkpoint_hparams(self.name).get("model_name", self.name),
            )
        chosen = [k for k in ("pretrained", "checkpoint", "train") if getattr(self, k)]
        if len(chosen) > 1:
            raise ValueError(
                f"ModelSource {self.name!r}: choose one of pretrained, checkpoint, train; got {chosen}"
            )


@dataclass
class TrainedModel:
    """A base model in the store: its checkpoint, its recorded metrics and its store key."""

    checkpoint: Path
    metrics: dict[str, Any]
    key: str


def cache_dir() -> Path:
    """The store's root: ``$STITCHING_CACHE/zoo`` (default ``~/.cache/stitching/zoo``)."""
    return Path(os.environ.get("STITCHING_CACHE", Path.home() / ".cache" / "stitching")).expanduser() / "zoo"


def load_model(source: ModelSource | str, num_classes: int | None = None) -> nn.Module:
    """The model ``source`` describes, in eval mode (trained first if it has a ``train`` config)."""
    return load_model_with_info(source, num_classes)[0]


def load_model_with_info(source: ModelSource | str, num_classes: int | None = None) -> tuple[nn.Module, dict]:
    """``load_model`` plus what is known of it: kind, checkpoint, and for trained models their metrics."""
    source = ModelSource(source) if isinstance(source, str) else source
    info: dict[str, Any] = {"name": source.name, "seed": source.seed}
    if source.train:
        trained = get_trained(source)
        model = _from_checkpoint(source.name, trained.checkpoint, num_classes, source.model_kwargs)
        info.update(kind="trained", checkpoint=str(trained.checkpoint), key=trained.key, **trained.metrics)
    elif source.checkpoint:
        model = _from_checkpoint(source.name, Path(source.checkpoint), num_classes, source.model_kwargs)
        info.update(kind="checkpoint", checkpoint=source.checkpoint)
    else:
        kwargs = dict(source.model_kwargs, **({"num_classes": num_classes} if num_classes else {}))
        with isolate_rng():
            torch.manual_seed(source.seed)  # the same random model every time, whatever ran before
            model = create_model(source.name, pretrained=source.pretrained, **kwargs)
        info["kind"] = "pretrained" if source.pretrained else "random"
    return model.eval(), info


def _store_entry(source: ModelSource) -> tuple[Path, list[str], dict]:
    """Where ``source`` lives in the store, with its training arguments and resolved config."""
    if not source.train:
        raise ValueError(f"ModelSource {source.name!r} has no train config")
    args = _training_args(source)
    config = _resolved_config(args)
    return cache_dir() / store_key(config), args, config


def is_stored(source: ModelSource) -> bool:
    """Whether the store holds ``source`` trained (only sources with a ``train`` config are ever stored)."""
    return bool(source.train) and (_store_entry(source)[0] / "metrics.json").is_file()


def get_trained(source: ModelSource) -> TrainedModel:
    """Train ``source`` with its ``train`` config on first use; afterwards return the stored result."""
    check_model_name(source.name)  # before the store is touched: a failed lookup leaves no lock behind
    final, args, config = _store_entry(source)
    if not (final / "metrics.json").is_file():
        if ":" not in source.name and not timm.is_model(source.name):
            create_model(source.name)  # raises UnknownModelError with a hint, before the store is touched
        final.parent.mkdir(parents=True, exist_ok=True)
        lock = Path(str(final) + ".lock")
        with FileLock(str(lock)):
            if not (final / "metrics.json").is_file():  # another process may have finished meanwhile
                _remove_leftovers(final)
                if _in_distributed_run():
                    _train_in_fresh_process(final, args, config, source)
                else:
                    _train_into(final, args, config, source)
        lock.unlink(missing_ok=True)  # safe once stored: whoever waits on it finds metrics.json and leaves
    metrics = json.loads((final / "metrics.json").read_text())
    return TrainedModel(final / "model.ckpt", metrics, final.name)


def _remove_leftovers(final: Path) -> None:
    """Under ``final``'s lock (no one else trains it now): remove the scratch directories and temporary files
    a killed training of it left behind."""
    for scratch in final.parent.glob(f".tmp-{final.name}-*"):
        print(f"stitching zoo: removing {scratch}, left by a killed training", file=sys.stderr)
        shutil.rmtree(scratch, ignore_errors=True)
    remove_stale_temporaries(final, max_age_s=0.0)


def remove_stored_locks() -> list[Path]:
    """Remove the lock files of models already in the store (left by runs before locks were removed after
    training): safe, since whoever waits on one finds ``metrics.json`` and leaves without training."""
    root, removed = cache_dir(), []
    for lock in root.glob("*.lock") if root.is_dir() else []:
        if (root / lock.stem / "metrics.json").is_file():
            lock.unlink(missing_ok=True)
            removed.append(lock)
    return removed


def store_key(config: dict) -> str:
    """16 hex characters over the resolved training config and the versions that change its result."""
    return stable_hash({"config": config, "versions": versions()}, length=16)


def versions() -> dict[str, str]:
    """Library versions a trained model depends on."""
    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "stitching": stitching.__version__,
    }


def _resolve_path(path: str) -> Path:
    """A config path as given, else relative to the repository (so suites work from any directory)."""
    p = Path(path).expanduser()
    if p.is_file() or p.is_absolute():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).is_file() else p


def _training_args(source: ModelSource) -> list[str]:
    path = _resolve_path(source.train)
    if not path.is_file():
        found = sorted(
            str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "configs" / "train").glob("*.yaml")
        )
        raise FileNotFoundError(f"training config {source.train!r} not found; shipped: {', '.join(found)}")
    args = [
        "--config",
        str(path),
        f"--seed_everything={source.seed}",
        f"--model.init_args.model_name={source.name}",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.enable_progress_bar={str(sys.stderr.isatty()).lower()}",
    ]
    if source.model_kwargs:
        args.append(f"--model.init_args.model_kwargs={json.dumps(source.model_kwargs)}")
    return args


def _cli(args: list[str], instantiate: bool):
    class _ZooCLI(StitchingCLI):
        def before_instantiate_classes(self) -> None:
            pass  # the store chooses the directory

        def _set_seed(self) -> None:
            if instantiate:  # reading a config must not reseed the caller's random generators
                super()._set_seed()

        def instantiate_classes(self) -> None:
            if instantiate:
                super().instantiate_classes()

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")  # args are ours
        return _ZooCLI(args=args, run=False, save_config_callback=None)


def _resolved_config(args: list[str]) -> dict:
    cli = _cli(args, instantiate=False)
    config = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
    config.pop("config", None)
    for section, keys in _NOT_HASHED.items():
        node = config
        for part in section.split("."):
            node = node.get(part) or {}
        for k in keys:
            node.pop(k, None)
    return config


@contextlib.contextmanager
def _quiet():
    """Hide Lightning's set-up chatter and keep the caller's random state while the store trains."""
    env = dict(os.environ)
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    # Lightning raises torch's thread count to all cores unless OMP_NUM_THREADS is set: keep the caller's.
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*modules? in eval mode.*")
            warnings.filterwarnings("ignore", message=".*srun.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            with isolate_rng():  # torch's, Python's and NumPy's global generators, which seed_everything sets
                yield
    finally:
        os.environ.clear()
        os.environ.update(env)  # seed_everything exports PL_GLOBAL_SEED
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _train_into(final: Path, args: list[str], config: dict, source: ModelSource) -> None:
    """Train ``source`` in a scratch directory and publish it into ``final``, ``metrics.json`` last."""
    print(
        f"stitching zoo: training {source.name} seed {source.seed} ({source.train}) -> {final}",
        file=sys.stderr,
    )
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".tmp-{final.name}-", dir=final.parent) as scratch, _quiet():
        cli = _cli([*args, f"--trainer.default_root_dir={scratch}"], instantiate=True)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        seconds = time.perf_counter() - start
        val = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
        test = cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]
    metrics = {
        "name": source.name,
        "seed": source.seed,
        "train_config": source.train,
        **{k.replace("/", "_"): round(float(v), 6) for k, v in {**val, **test}.items()},
        "train_seconds": round(seconds, 2),
        "epochs": cli.trainer.current_epoch,
        "num_params": num_parameters(cli.model),
        "num_threads": torch.get_num_threads(),
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(final / "model.ckpt") as tmp:
        cli.trainer.save_checkpoint(tmp, weights_only=True)
    atomic_write(final / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    atomic_write(final / "metrics.json", json.dumps(metrics, indent=2))  # marks the model as stored


# How Lightning and torchmetrics detect a distributed run; a base model trained for one rank must not see it.
_DISTRIBUTED_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
                    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")  # fmt: skip


def _in_distributed_run() -> bool:
    """Whether this process is a rank of a DDP group, formed or about to be (its launcher's variables)."""
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    return initialized or any(name in os.environ for name in ("LOCAL_RANK", "WORLD_SIZE"))


def _train_in_fresh_process(final: Path, args: list[str], config: dict, source: ModelSource) -> None:
    """``_train_into`` in a new process outside this one's DDP group (a rank of a multi-device cell).

    In the group, Lightning and torchmetrics would sync the base model's metrics with ranks that are not
    training it, and wait forever; the new process sees neither the group nor the SLURM task layout.
    """
    import multiprocessing

    saved = dict(os.environ)
    for name in list(os.environ):
        if name in _DISTRIBUTED_ENV or name.startswith("SLURM_"):
            del os.environ[name]
    try:
        process = multiprocessing.get_context("spawn").Process(
            target=_train_into, args=(final, args, config, source), name=f"train-{source.name}"
        )
        process.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(
            f"training base model {source.name} seed {source.seed} failed in its own process (exit code "
            f"{process.exitcode}); its traceback is above. Train it alone with: stitching fit --config "
            f"{source.train} --seed_everything={source.seed} --model.init_args.model_name={source.name}"
        )


def _checkpoint_hparams(path: str | Path) -> dict:
    ckpt = read_checkpoint(path, mmap=True)
    return dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}


def _from_checkpoint(name: str, path: Path, num_classes: int | None, model_kwargs: dict) -> nn.Module:
    """Build ``name`` with the checkpoint's recorded head size and kwargs, then load its weights."""
    hparams = _checkpoint_hparams(path)
    saved = hparams.get("num_classes")
    if num_classes is not None and saved is not None and saved != num_classes:
        raise ValueError(f"{path} classifies {saved} classes but {num_classes} were asked for")
    kwargs = {**(hparams.get("model_kwargs") or {}), **model_kwargs}
    classes = saved or num_classes
    if classes is not None:
        kwargs["num_classes"] = classes
    with isolate_rng():  # the initialisation is overwritten: keep the caller's random state
        return create_model(name, checkpoint_path=path, **kwargs)


def describe(source: ModelSource) -> dict:
    """A JSON-friendly description of a source (for records)."""
    return asdict(source)
