"""One-line configuration errors for the CLI: jsonargparse's nested Union reports, condensed, with options."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

from stitching._utils import did_you_mean

# Which of our classes can stand at each subclass-mode key (listed when a class_path is wrong).
KNOWN_CLASSES: dict[str, tuple[str, list[str]]] = {
    "data": (
        "stitching.data",
        ["CIFAR10DataModule", "CIFAR100DataModule", "DigitsDataModule", "ImageFolderDataModule"],
    ),
    "model": ("stitching.modules", ["ClassifierModule", "StitchModule"]),
}


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _init_options(class_path: str) -> list[str]:
    params = inspect.signature(_import(class_path).__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _close(word: str, options: list[str]) -> str:
    hint = did_you_mean(word, options, cutoff=0.5)
    return f" ({hint.strip()})" if hint else ""


def _errors(message: str) -> list[str]:
    """The bullets under ``Errors:`` in a jsonargparse Union report, each joined onto one line."""
    block = message.split("Errors:", 1)[1].split("Given value", 1)[0]
    bullets = re.split(r"\n\s*- ", "\n" + block.strip("\n"))
    joined = [" ".join(line.strip() for line in b.splitlines()).strip() for b in bullets]
    return [b for b in joined if b and not b.startswith("Expected a <class 'NoneType'>")]


def condense(message: str) -> str:
    """Rewrite a jsonargparse error as one line that names the problem and the valid options."""
    key = re.match(r'\s*Parser key "([^"]+)"', message)
    key = key.group(1) if key else None
    if "Errors:" not in message:
        return " ".join(message.split())
    detail = "; ".join(_errors(message))
    option = re.search(r"class_path '([^']+)': Option '([^']+)' is not accepted", detail)
    if option:
        path, name = option.groups()
        valid = _init_options(path)
        return f"{key}: {path} has no option {name!r}{_close(name, valid)}; valid options: {', '.join(valid)}"
    bad_class = re.search(r"(?:class_path '([^']+)'|dot import path string: (\S+))", detail)
    if bad_class and key in KNOWN_CLASSES and not re.search(r"Parser key|Option", detail.split(":", 1)[-1]):
        given = bad_class.group(1) or bad_class.group(2)
        module, names = KNOWN_CLASSES[key]
        valid = [f"{module}.{n}" for n in names]
        hint = _close(given, valid + names)
        return f"{key}: unknown class_path {given!r}{hint}; valid: {', '.join(valid)}"
    detail = re.sub(r"^Problem with given class_path '[^']+': ", "", detail)
    return f"{key}: {detail}" if key else detail


class StitchingArgumentParser(LightningArgumentParser):
    """LightningArgumentParser whose errors are one line plus a pointer to ``--help``."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        message = condense(message)
        unknown = re.match(r"unrecognized arguments: (--[\w.]+)", message)
        if unknown:
            flag = unknown.group(1)
            message += _close(flag, [o for o in self._option_string_actions if o.startswith("--")])
        if not self.exit_on_error:
            super().error(message, ex)
        sys.stderr.write(f"error: {message}\n(run with --help for all options)\n")
        sys.exit(2)
