"""The method registry: each PEFT method or baseline is one entry with its defaults and its build function."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from peftlab.config import RunConfig
from peftlab.errors import PeftlabError, one_of

# Tasks a method can be applied for (MethodContext.task).
TASKS = ("seq-cls", "causal-lm", "seq2seq-lm")
ALL_TASKS = frozenset(TASKS)

# `--methods all` runs every registered method; the ones that cannot apply to the model are skipped with their reason.
ALL = "all"

# RunConfig fields that several methods read; each method names the ones it uses in Method.flags.
COMMON_FLAGS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules")


@dataclass
class MethodContext:
    """What a method needs to know about the model and the run to apply itself."""

    config: RunConfig
    model_type: str  # config.model_type of the base model, e.g. "bert"
    task: str  # one of TASKS: "seq-cls", "causal-lm" or "seq2seq-lm"
    head_modules: list[str]  # modules created fresh for the task; always trained
    options: dict[str, Any] = field(default_factory=dict)  # method options after defaults and --method-arg
    # False when the model was built from its config on the meta device, for counting only:
    # a method must then skip initialisations that read the weights (PiSSA's SVD, for example).
    weights_loaded: bool = True
    state: dict[str, Any] = field(default_factory=dict)  # what apply leaves for the method's save hook


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
    default_lr: float  # for seq-cls, and for other tasks unless task_lr names them
    apply: Callable[[nn.Module, MethodContext], nn.Module]  # returns the model to train
    saves_adapter: bool  # True: the artifact is a peft adapter folder; False: a full model folder
    tasks: frozenset[str] = frozenset({"seq-cls"})
    options: tuple[MethodOption, ...] = ()
    # Raises PeftlabError, naming the reason and the alternatives, when the method cannot apply to this model.
    check: Callable[[nn.Module, MethodContext], None] | None = None
    family: str = "baseline"  # the group `peftlab methods` lists it under
    targets: dict[str, list[str]] = field(default_factory=dict)  # default target modules per config.model_type
    layer_types: tuple[type, ...] = ()  # module types the method can adapt; empty when it adapts no target modules
    flags: tuple[str, ...] = ()  # the COMMON_FLAGS this method reads; the others do not change it
    # Builders of the TrainerCallbacks a training run needs (AdaLoRA's rank schedule), each given the context.
    callbacks: tuple[Callable[[MethodContext], Any], ...] = ()
    # Writes the adapter folder when model.save_pretrained alone would not reload onto the original base model.
    save: Callable[[nn.Module, MethodContext, Path], None] | None = None
    task_lr: dict[str, float] = field(default_factory=dict)  # default learning rate per task where it differs from default_lr

    def lr_for(self, task: str) -> float:
        """The default learning rate of this method for ``task``."""
        return self.task_lr.get(task, self.default_lr)

    def check_applies(self, model: nn.Module, ctx: MethodContext) -> None:
        """Raise PeftlabError, with the reason and the alternatives, when this method cannot train ``model`` for ``ctx.task``."""
        if ctx.task not in self.tasks:
            able = [name for name in all_method_names() if ctx.task in get_method(name).tasks]
            raise PeftlabError(
                f"method {self.name!r} does not support the task {ctx.task!r} (only {one_of(self.tasks)}); methods for {ctx.task}: {', '.join(able)}"
            )
        if self.check is not None:
            self.check(model, ctx)


@dataclass(frozen=True)
class MethodFamily:
    """Methods whose name carries a parameter, such as top-layers:N; get_method builds the entry for each value."""

    name: str  # the part before the colon
    parameter: str  # how listings show the parameter, e.g. "N"
    summary: str
    build: Callable[[str], Method]  # parses the text after the colon, raising PeftlabError on an invalid value
    example: str  # the value that --methods all runs


METHODS: dict[str, Method] = {}
FAMILIES: dict[str, MethodFamily] = {}
_ALL_NAMES: list[str] = []  # what --methods all expands to, in registration order


def register(method: Method) -> Method:
    if method.name in METHODS or method.name == ALL:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    _ALL_NAMES.append(method.name)
    return method


def register_family(family: MethodFamily) -> MethodFamily:
    if family.name in FAMILIES or family.name in METHODS:
        raise ValueError(f"method family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    _ALL_NAMES.append(f"{family.name}:{family.example}")
    return family


def all_method_names() -> list[str]:
    """Return the names --methods all runs: every method, and each family with its example parameter."""
    return list(_ALL_NAMES)


def expand_all(names: list[str]) -> tuple[list[str], set[str]]:
    """Replace ``all`` by every method not named elsewhere in ``names``; return the names and those ``all`` added."""
    if ALL not in names:
        return list(names), set()
    named = set(names)
    added = [name for name in all_method_names() if name not in named]
    position = names.index(ALL)
    expanded = [name for name in names[:position] if name != ALL] + added + [name for name in names[position + 1 :] if name != ALL]
    return expanded, set(added)


def get_method(name: str) -> Method:
    """Look a method up by name, building parameterised ones (top-layers:2); reject unknown names with the valid ones."""
    if name in METHODS:
        return METHODS[name]
    prefix, colon, argument = name.partition(":")
    if prefix in FAMILIES:
        family = FAMILIES[prefix]
        if not colon or not argument:
            raise PeftlabError(f"method {prefix!r} needs a parameter: {prefix}:{family.parameter}, for example {prefix}:{family.example}")
        return family.build(argument)
    valid = list(METHODS) + [f"{f.name}:{f.parameter}" for f in FAMILIES.values()]
    raise PeftlabError(f"unknown method {name!r}; valid methods are {', '.join(sorted(valid))}, or {ALL}")


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
