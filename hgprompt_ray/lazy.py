"""Package attributes imported on first use (PEP 562), so a Ray worker imports only what it runs.

A Tune trial unpickles ``hgprompt_ray.tuning.trainable.hgprompt_trial``, which imports the
package ``hgprompt_ray.tuning`` first; an eager ``__init__`` would pull in the driver's side too
(Ray Train, Tune's ``Tuner``, the data registry, timm), about 3 of the 5.5 s a fresh trial
process spent importing on the 2-core machine. A package lists what it exports and where; names
resolve, and are cached in the package, when first read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, modules: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose ``modules`` map a submodule to the
    names it exports.

    Example: ``__getattr__, __dir__ = lazy_exports(__name__, {"run": ("run_search",)})`` makes
    ``from hgprompt_ray.tuning import run_search`` import ``hgprompt_ray.tuning.run`` then.
    """
    namespace = importlib.import_module(package).__dict__
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value  # read once: later reads skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
