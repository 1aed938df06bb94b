"""A package's public names imported when first used: its `__getattr__` and `__dir__`.

Shared by `saliency` and `pretrained`, whose `__init__` lists where each name lives (`_FROM`)
instead of importing it: `import saliency` must not import torch, which takes seconds, for a
caller that only draws maps already computed. Standard library only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(
    namespace: dict, table: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for the package whose `globals()` is `namespace`.

    `table` maps a submodule to the public names it defines. A name in it is imported from its
    submodule on first use and then stored in the package (the next lookup is an ordinary
    one); any other name is tried as a submodule not imported yet (`saliency.sanity`), else
    AttributeError. `__dir__` lists the package's globals and its `__all__`.
    """
    package = namespace["__name__"]
    module_of = {name: module for module, names in table.items() for name in names}

    def __getattr__(name: str):
        module = module_of.get(name)
        if module is None:  # a submodule not imported yet, or nothing
            try:
                return importlib.import_module(f".{name}", package)
            except ModuleNotFoundError as err:
                if err.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__
