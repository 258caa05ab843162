"""PEFT methods and baselines, each one entry of the registry in ``registry.py``.

Importing this package registers every built-in method.
"""

from peftlab.methods import baselines, lora  # noqa: F401  (registers the entries)
from peftlab.methods.registry import METHODS, Method, MethodContext, MethodOption, get_method, method_options

__all__ = ["METHODS", "Method", "MethodContext", "MethodOption", "get_method", "method_options"]
