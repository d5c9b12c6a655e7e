"""Adapters between two models' activations: a 1x1 conv / per-token linear map with layout conversion.

``create_adapter(source_spec, target_spec, norm=..., rank=..., init=...)`` builds one; see
:mod:`stitching.adapters.adapter` for how shapes are matched and how each initialisation works, and
:class:`RidgeRegression` for the streaming closed-form least squares behind ``init="lstsq"``.
"""

from stitching.adapters.adapter import Adapter, create_adapter
from stitching.adapters.config import AdapterConfig
from stitching.adapters.lstsq import RidgeRegression

__all__ = ["Adapter", "AdapterConfig", "RidgeRegression", "create_adapter"]
