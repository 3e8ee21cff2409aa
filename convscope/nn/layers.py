"""Layer names: the one place that checks them and looks modules up.

Layer names are module names as in ``model.named_modules()`` (``features.0``,
``layer3``, ``relu4``). A name written with ``/`` (``features/0``) is read
with ``.``. Every error names the config key, the unknown name, the closest
valid names and a listing of valid choices.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing torch is slow; the workflow imports this module while parsing
    from torch import nn

__all__ = ["LayerNameError", "module_names", "check_layer_names", "get_module", "get_modules",
           "listing", "did_you_mean"]

_MAX_LISTED = 40


class LayerNameError(ValueError):
    """A config names a layer that is not a module of the model (or not of the right type)."""


def listing(names: Iterable, limit: int = _MAX_LISTED) -> str:
    """``"a, b, c, ... (12 more)"``: valid choices for an error message."""
    names = [str(n) for n in names]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return (", ".join(names[:limit]) or "none") + more


def did_you_mean(name, valid: Iterable) -> str:
    """``" (did you mean 'relu4'?)"`` or ``""``."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def module_names(model: nn.Module, kind: type | tuple[type, ...] | None = None) -> list[str]:
    """Names of the model's submodules (the root excluded), optionally only of type ``kind``."""
    return [name for name, module in model.named_modules()
            if name and (kind is None or isinstance(module, kind))]


def _canonical(name: str, modules: dict) -> str | None:
    for candidate in (name, name.replace("/", ".")):
        if candidate and candidate in modules:
            return candidate
    return None


def check_layer_names(model: nn.Module, names: str | Sequence[str] | None, key: str = "layers",
                      kind: type | tuple[type, ...] | None = None,
                      what: str = "a module of the model") -> None:
    """Raise `LayerNameError` if a name is not a submodule (of type ``kind``); ``None`` passes."""
    if names is None:
        return
    names = [names] if isinstance(names, str) else list(names)
    modules = dict(model.named_modules())
    valid = module_names(model, kind)
    for name in names:
        found = _canonical(str(name), modules)
        if found is None or (kind is not None and not isinstance(modules[found], kind)):
            raise LayerNameError(f"config key {key!r}: {name!r} is not {what}"
                                 f"{did_you_mean(name, valid)}; valid names: {listing(valid)}")


def get_module(model: nn.Module, name: str, key: str = "layers") -> nn.Module:
    """The submodule called ``name``; `LayerNameError` naming ``key`` if there is none."""
    check_layer_names(model, [name], key=key)
    modules = dict(model.named_modules())
    return modules[_canonical(name, modules)]


def get_modules(model: nn.Module, names: Sequence[str], key: str = "layers") -> dict[str, nn.Module]:
    """``{name: module}`` for every name, checked together (the first bad one is reported)."""
    check_layer_names(model, names, key=key)
    modules = dict(model.named_modules())
    return {name: modules[_canonical(name, modules)] for name in names}
