"""The method registry: each PEFT method or baseline is one entry with its defaults and its build function."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from peftlab.config import RunConfig
from peftlab.errors import PeftlabError, one_of


@dataclass
class MethodContext:
    """What a method needs to know about the model and the run to apply itself."""

    config: RunConfig
    model_type: str  # config.model_type of the base model, e.g. "bert"
    task: str  # "seq-cls" (later also "causal-lm", "seq2seq-lm")
    head_modules: list[str]  # modules created fresh for the task; always trained
    options: dict[str, Any] = field(default_factory=dict)  # method options after defaults and --method-arg
    # False when the model was built from its config on the meta device, for counting only:
    # a method must then skip initialisations that read the weights (PiSSA's SVD, for example).
    weights_loaded: bool = True


@dataclass(frozen=True)
class MethodOption:
    """An option a method accepts through --method-arg key=value."""

    name: str
    type: type
    default: Any
    help: str


@dataclass(frozen=True)
class Method:
    """One registry entry."""

    name: str
    summary: str
    default_lr: float
    apply: Callable[[nn.Module, MethodContext], nn.Module]  # returns the model to train
    saves_adapter: bool  # True: the artifact is a peft adapter folder; False: a full model folder
    tasks: frozenset[str] = frozenset({"seq-cls"})
    options: tuple[MethodOption, ...] = ()
    # Raises PeftlabError, naming the reason and the alternatives, when the method cannot apply to this model.
    check: Callable[[nn.Module, MethodContext], None] | None = None


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """Look a method up by name, rejecting unknown names with the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise PeftlabError(f"unknown method {name!r}; valid methods are {one_of(METHODS)}") from None


def method_options(method: Method, method_args: dict[str, Any]) -> dict[str, Any]:
    """Merge a method's option defaults with --method-arg values, converting and checking each."""
    valid = {option.name: option for option in method.options}
    options = {name: option.default for name, option in valid.items()}
    for key, value in method_args.items():
        if key not in valid:
            accepted = one_of(valid) if valid else "none"
            raise PeftlabError(f"method {method.name!r} has no option {key!r}; its options are {accepted}")
        options[key] = _convert(valid[key], value, method.name)
    return options


def _convert(option: MethodOption, value: Any, method: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if option.type is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return option.type(value)
    except ValueError:
        raise PeftlabError(f"option {option.name!r} of method {method!r} must be {option.type.__name__}, got {value!r}") from None
