"""Online or offline: W&B goes online only when an API key is available, so a run never blocks on a login."""

from __future__ import annotations

import os
import re
from typing import Any

from stitching._utils import stable_hash

MODES = ("online", "offline", "disabled", "shared")
DEFAULT_BASE_URL = "https://api.wandb.ai"
DEFAULT_PROJECT = "stitching"


def has_api_key() -> bool:
    """Whether W&B credentials are configured: ``WANDB_API_KEY`` (or an identity token file), ``~/.netrc``
    for the W&B host, or an ``api_key`` in wandb's settings. Nothing is sent to check them."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)
    return _netrc_has_key(host) or _settings_have_key()


def _netrc_has_key(host: str) -> bool:
    try:
        from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth

        return bool(read_netrc_auth(host=host))
    except ImportError:  # wandb moved its private reader: fall back to the standard library
        import netrc
        from urllib.parse import urlparse

        try:
            return netrc.netrc().authenticators(urlparse(host).hostname or host) is not None
        except (OSError, netrc.NetrcParseError):
            return False
    except Exception:  # a malformed key in .netrc is not a usable key
        return False


def _settings_have_key() -> bool:
    try:
        from wandb.sdk import wandb_setup

        return bool(wandb_setup.singleton().settings.api_key)
    except Exception:
        return False


def resolve_mode(mode: str | None = None) -> str:
    """The W&B mode: ``mode`` if given, else ``WANDB_MODE``, else online with a key, offline without."""
    mode = mode or os.environ.get("WANDB_MODE")
    if mode == "dryrun":  # wandb's old name for offline
        mode = "offline"
    if mode is None:
        return "online" if has_api_key() else "offline"
    if mode not in MODES:
        raise ValueError(f"unknown W&B mode {mode!r}; valid: {', '.join(MODES)}")
    return mode


def stable_run_id(*parts: Any, prefix: str = "") -> str:
    """A W&B run id derived from ``parts`` (hashed as canonical JSON): the same inputs name the same run."""
    digest = stable_hash(parts, length=16)
    return f"{slug(prefix)}-{digest}" if prefix else digest


def slug(text: str, max_len: int = 40) -> str:
    """``text`` reduced to characters W&B accepts in run ids (letters, digits, ``-`` and ``_``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-")[:max_len] or "run"


def project_name(project: str | None = None) -> str:
    """``project``, else ``WANDB_PROJECT`` (sweep agents set it), else ``stitching``."""
    return project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
