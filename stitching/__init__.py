"""stitching: a model-stitching benchmark harness.

Cut a source model's front and a target model's back, train only a small adapter between them, and compare
the stitched accuracy with the target's own.

The public names below are imported on first use, so ``import stitching.launch`` (in every SLURM job and
worker process) does not pay for importing timm.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "ActivationSpec": "stitching.cuts",
    "CutPoint": "stitching.cuts",
    "get_cut": "stitching.cuts",
    "list_cuts": "stitching.cuts",
    "split_model": "stitching.cuts",
    "Adapter": "stitching.adapters",
    "AdapterConfig": "stitching.adapters",
    "create_adapter": "stitching.adapters",
    "create_model": "stitching.models",
    "list_models": "stitching.models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stitching' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
