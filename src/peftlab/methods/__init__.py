"""PEFT methods and baselines, each one entry of the registry in ``registry.py``.

Importing this package registers every built-in method.
"""

from peftlab.methods import baselines, lora, reparam, prompts  # noqa: F401, I001  (registers the entries, in this order)
from peftlab.methods.registry import (
    ALL,
    FAMILIES,
    METHODS,
    Method,
    MethodContext,
    MethodFamily,
    MethodOption,
    all_method_names,
    expand_all,
    get_method,
    method_options,
)

__all__ = [
    "ALL", "FAMILIES", "METHODS", "Method", "MethodContext", "MethodFamily", "MethodOption",
    "all_method_names", "expand_all", "get_method", "method_options",
]
