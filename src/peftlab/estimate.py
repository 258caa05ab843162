"""Training-memory estimate: weights, gradients, AdamW states and activations of one training step.

The estimate reads the model's structure (a meta model is enough) and the
trainable parameters after a method was applied, so it needs no weights and
no device. docs/memory.md gives the formulas and compares them with measured
peaks.

Assumptions, in bytes per parameter:

- weights: every parameter in the training dtype (4 for fp32, 2 for bf16 and
  fp16). With a 4-bit base, the linear weights of the transformer blocks take
  0.5 plus 0.0159 for the NF4 quantisation constants, and the rest stays in
  the training dtype.
- gradients: one per trainable parameter, in the training dtype.
- optimizer: AdamW keeps two fp32 states per trainable parameter (8), plus an
  fp32 master copy (4) when the training dtype is 16-bit.
- activations: what autograd saves for the backward pass, per layer and
  token, from the hidden size, intermediate size, heads, sequence length and
  which linear layers train; see :func:`layer_terms`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.errors import PeftlabError, one_of

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
ATTENTION_KINDS = ("fused", "materialized")

FP32 = 4
ADAMW_STATE_BYTES = 2 * FP32  # exp_avg and exp_avg_sq
MASTER_WEIGHT_BYTES = FP32  # fp32 copy of each trainable parameter in 16-bit mixed precision
# NF4 with double quantisation (bitsandbytes' quantize_4bit with compress_statistics): 4 bits
# per weight, an 8-bit absmax per block of 64 weights and an fp32 absmax per 256 of those.
# Without double quantisation (transformers' default) the absmax is fp32: 0.5 + 4 / 64.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)

LINEAR_TYPES = (nn.Linear, Conv1D)

# ---------------------------------------------------------------------------
# Setup and parsing


@dataclass(frozen=True)
class MemorySetup:
    """The training step the estimate is for."""

    dtype: str = "fp32"  # fp32, bf16 or fp16: weights, gradients and activations
    batch_size: int = 32
    seq_len: int = 128
    device_memory: int | None = None  # bytes; None: no fit check
    # "fused": flash or memory-efficient attention keeps no seq_len x seq_len scores;
    # "materialized": eager attention, and PyTorch's SDPA on the CPU with attention dropout,
    # keep them. None: from the model's attention implementation.
    attention: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise PeftlabError(f"unknown dtype {self.dtype!r}; valid dtypes are {one_of(DTYPE_BYTES)}")
        for name in ("batch_size", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PeftlabError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if self.attention is not None and self.attention not in ATTENTION_KINDS:
            raise PeftlabError(f"unknown attention kind {self.attention!r}; valid kinds are {one_of(ATTENTION_KINDS)}")

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len


def parse_dtype(value: str) -> str:
    """Turn fp32/float32, bf16/bfloat16 or fp16/float16/half into the canonical name."""
    name = value.strip().lower()
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPE_BYTES:
        raise PeftlabError(f"unknown --dtype {value!r}; valid values are {one_of(list(DTYPE_BYTES) + list(DTYPE_ALIASES))}")
    return name


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNIT_POWERS = {"b": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_memory_size(value: str) -> int:
    """Parse a memory size such as 24GB, 80GiB or 16384MB into bytes.

    Units are binary (GB and GiB both mean 2**30 bytes), as GPU memory is
    quoted; a bare number is read as GB.
    """
    match = _SIZE.match(value)
    if match is None:
        raise PeftlabError(f"invalid --device-memory {value!r}; pass a size such as 24GB, 80GiB or 16384MB")
    number, unit = float(match.group(1)), (match.group(2) or "g").lower()
    size = int(number * 1024 ** _UNIT_POWERS[unit[0]])
    if size <= 0:
        raise PeftlabError(f"--device-memory must be larger than 0, got {value!r}")
    return size


def memory_setup(
    dtype: str | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    device_memory: str | None = None,
    attention: str | None = None,
) -> MemorySetup:
    """Build a MemorySetup from command-line strings, with the defaults for the options not given."""
    defaults = MemorySetup()
    return MemorySetup(
        dtype=parse_dtype(dtype) if dtype is not None else defaults.dtype,
        batch_size=batch_size if batch_size is not None else defaults.batch_size,
        seq_len=seq_len if seq_len is not None else defaults.seq_len,
        device_memory=parse_memory_size(device_memory) if device_memory is not None else None,
        attention=attention,
    )


# ---------------------------------------------------------------------------
# Model structure


# Roles of the linear layers of a transformer block, by the end of their path inside the block.
# A role decides which input the layer saves: inputs of the same role in one attention or MLP
# block are one tensor (query, key and value read the same hidden states).
LINEAR_ROLES = [
    ("attn_out", ("attention.output.dense", "attn.c_proj", "self_attn.out_proj", "attention.dense", "self_attention.dense", "o_proj", "o", "out_lin", "out_proj")),
    ("mlp_out", ("output.dense", "mlp.c_proj", "down_proj", "wo", "fc2", "lin2", "dense_4h_to_h", "w2")),
    ("mlp_in", ("intermediate.dense", "c_fc", "gate_proj", "up_proj", "gate_up_proj", "wi", "wi_0", "wi_1", "fc1", "lin1", "dense_h_to_4h", "w1", "w3")),
    ("attn_in", ("query", "key", "value", "q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "q", "k", "v", "query_key_value", "Wqkv", "q_lin", "k_lin", "v_lin", "query_proj", "key_proj", "value_proj", "in_proj")),
]
# Dropout modules on the attention probabilities rather than on hidden states (GPT-2 style names).
PROBS_DROPOUT_NAMES = ("attn_dropout", "attention_dropout")
ATTENTION_DROPOUT_ATTRS = ("attention_dropout", "attention_probs_dropout_prob", "attn_pdrop", "dropout_rate")
# Tensors of the MLP width that an activation function of transformers.activations keeps when
# it is written as several PyTorch operations, counted with autograd's saved-tensor hooks.
# A single-kernel activation (ReLU, SiLU, exact GELU) keeps one.
ACTIVATION_KEPT_TENSORS = {"NewGELUActivation": 4, "FastGELUActivation": 7, "QuickGELUActivation": 2}


def linear_role(path: str) -> str:
    """Return attn_in, attn_out, mlp_in, mlp_out or unknown for a linear layer's path inside its block."""
    for role, suffixes in LINEAR_ROLES:
        for suffix in suffixes:
            if path == suffix or path.endswith("." + suffix):
                return role
    return "unknown"


@dataclass
class LinearProfile:
    """A linear layer of a block, with what decides the activations and 4-bit weights it accounts for."""

    path: str  # inside the block
    role: str
    parent: str  # attention or MLP module that owns it
    in_features: int
    trains: bool  # its weight or an adapter on it trains, so its input is saved
    adapter_rank: int  # width of a LoRA-style intermediate (lora_A output) kept for backward
    adapter_dropouts: int  # dropouts with p > 0 inside the adapter, each keeping a mask and its output
    quantizable_params: int  # elements of the base weight (quantised in the 4-bit case)
    base_trains: bool


@dataclass
class BlockProfile:
    """One transformer block: what autograd keeps in it depends on this and on what trains."""

    linears: list[LinearProfile] = field(default_factory=list)
    norms: list[tuple[str, bool]] = field(default_factory=list)  # ("layer" | "rms", weight trains)
    hidden_dropouts: int = 0
    activation_tensors: int = 1  # MLP-width tensors the activation function keeps
    any_trainable: bool = False

    @property
    def attention_blocks(self) -> int:
        return len({lin.parent for lin in self.linears if lin.role == "attn_in"})

    @property
    def gated_mlp(self) -> bool:
        inputs = [lin for lin in self.linears if lin.role == "mlp_in"]
        return len(inputs) >= 2 or any(lin.path.endswith("gate_up_proj") for lin in inputs)


@dataclass
class ModelProfile:
    """The dimensions and trainable parts of a model that the estimate needs."""

    task: str
    hidden: int
    intermediate: int
    heads: int
    q_width: int  # heads x head size
    kv_width: int  # key/value heads x head size
    vocab: int
    attn_implementation: str
    attention_dropout: float
    blocks: list[BlockProfile]
    embedding_trains: bool  # some parameter before the first block trains (embeddings)
    before_norms: list[tuple[str, bool]]  # outside the blocks, before them (embedding LayerNorm)
    before_dropouts: int
    after_norms: list[tuple[str, bool]]  # outside the blocks, after them (final norm)
    after_dropouts: int
    head_trains: bool
    params: int  # every parameter of the adapted model, frozen originals and trainable copies each once
    trainable_params: int
    quantizable_frozen_params: int  # linear weights inside the blocks that do not train
    quantizable_trains: bool  # some block linear weight itself trains (full fine-tuning): no 4-bit case


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, LINEAR_TYPES) or isinstance(getattr(module, "base_layer", None), LINEAR_TYPES)


def _is_norm(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(module, nn.LayerNorm) or ("Norm" in type(module).__name__ and isinstance(weight, nn.Parameter) and weight.dim() == 1)


def _norm_entry(module: nn.Module) -> tuple[str, bool]:
    kind = "layer" if isinstance(module, nn.LayerNorm) else "rms"
    return kind, module.weight is not None and module.weight.requires_grad


def find_blocks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Find the stacks of transformer blocks: ModuleLists of one block class that contain linear layers, outermost only."""
    stacks = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(outer + ".") for outer, _ in stacks):
            continue
        classes = {type(child) for child in module}
        if len(classes) == 1 and any(_is_linear(m) for m in module[0].modules()):
            stacks.append((name, module))
    return stacks


def profile_block(block: nn.Module) -> BlockProfile:
    profile = BlockProfile(any_trainable=any(p.requires_grad for p in block.parameters()))
    wrappers: list[str] = []
    modules = dict(block.named_modules())
    for path, module in modules.items():
        if any(path.startswith(w + ".") for w in wrappers):
            continue  # inside a linear layer or its adapter
        if path and _is_linear(module):
            wrappers.append(path)
            profile.linears.append(_profile_linear(path, module))
        elif _is_norm(module):
            profile.norms.append(_norm_entry(module))
        elif isinstance(module, nn.Dropout) and module.p > 0 and not _is_probs_dropout(path, modules):
            profile.hidden_dropouts += 1
        elif type(module).__name__ in ACTIVATION_KEPT_TENSORS:
            profile.activation_tensors = ACTIVATION_KEPT_TENSORS[type(module).__name__]
    return profile


def _is_probs_dropout(path: str, modules: dict[str, nn.Module]) -> bool:
    if path.endswith(PROBS_DROPOUT_NAMES):
        return True
    # BERT-style: a plain "dropout" beside the query/key/value layers drops attention probabilities.
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    siblings = [name for name in modules if name.startswith(parent + ".") and name.count(".") == path.count(".")]
    return path.endswith(".dropout") and any(_is_linear(modules[s]) and linear_role(s) == "attn_in" for s in siblings)


def _profile_linear(path: str, module: nn.Module) -> LinearProfile:
    base = getattr(module, "base_layer", module)
    in_features = base.weight.shape[0] if isinstance(base, Conv1D) else base.weight.shape[1]
    rank = 0
    dropouts = 0
    for name, sub in module.named_modules():
        parts = name.split(".")
        if "lora_A" in parts and isinstance(sub, nn.Linear):
            rank += sub.out_features
        if isinstance(sub, nn.Dropout) and sub.p > 0:
            dropouts += 1
    return LinearProfile(
        path=path,
        role=linear_role(path),
        parent=path.rsplit(".", 1)[0] if "." in path else "",
        in_features=int(in_features),
        trains=any(p.requires_grad for p in module.parameters()),
        adapter_rank=rank,
        adapter_dropouts=dropouts,
        quantizable_params=base.weight.numel(),
        base_trains=bool(base.weight.requires_grad),
    )


def profile_model(model: nn.Module, task: str, head_modules: list[str] = ()) -> ModelProfile:
    """Read what the estimate needs from a model after a method was applied (meta or loaded weights)."""
    root = model.get_base_model() if hasattr(model, "get_base_model") else model  # unwrap a PeftModel
    config = root.config
    stacks = find_blocks(root)
    if not stacks:
        raise PeftlabError(f"found no stack of transformer blocks in {type(root).__name__}; the memory estimate needs one")
    blocks = [profile_block(block) for _, stack in stacks for block in stack]
    stack_names = [name for name, _ in stacks]
    head_paths = list(head_modules)
    output = root.get_output_embeddings()
    if output is not None:
        head_paths += [name for name, module in root.named_modules() if module is output]

    def inside(name: str, paths: list[str]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in paths)

    # Modules outside the blocks and the head: the embedding norm and dropout come before
    # the first block, the final norm after it. A dropout that is a direct child of the
    # task model belongs to its head and acts on one vector per sequence, so it is left out.
    before_norms, after_norms = [], []
    before_dropouts = after_dropouts = 0
    embedding_trains = after_trains = False
    first_block_seen = False
    for name, module in root.named_modules():
        if inside(name, stack_names):
            first_block_seen = True
            continue
        if inside(name, head_paths):
            continue
        own_trains = any(p.requires_grad for p in module.parameters(recurse=False))
        if _is_norm(module):
            (after_norms if first_block_seen else before_norms).append(_norm_entry(module))
        elif isinstance(module, nn.Dropout) and module.p > 0 and "." in name:
            if first_block_seen:
                after_dropouts += 1
            else:
                before_dropouts += 1
        elif own_trains and first_block_seen:
            after_trains = True  # a pooler or an output layer that is not in the head list
        if own_trains and not first_block_seen:
            embedding_trains = True
    head_trains = after_trains or any(p.requires_grad for path in head_paths for p in root.get_submodule(path).parameters())

    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "d_ff", None) or getattr(config, "n_inner", None) or 4 * hidden
    attention_dropout = next((float(getattr(config, a)) for a in ATTENTION_DROPOUT_ATTRS if isinstance(getattr(config, a, None), (int, float))), 0.0)
    linears = [lin for block in blocks for lin in block.linears]
    return ModelProfile(
        task=task,
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        q_width=heads * head_dim,
        kv_width=kv_heads * head_dim,
        vocab=config.vocab_size,
        attn_implementation=getattr(config, "_attn_implementation", None) or "eager",
        attention_dropout=attention_dropout,
        blocks=blocks,
        embedding_trains=embedding_trains,
        before_norms=before_norms,
        before_dropouts=before_dropouts,
        after_norms=after_norms,
        after_dropouts=after_dropouts,
        head_trains=head_trains,
        params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        quantizable_frozen_params=sum(lin.quantizable_params for lin in linears if not lin.base_trains),
        quantizable_trains=any(lin.base_trains for lin in linears),
    )


# ---------------------------------------------------------------------------
# Activations


@dataclass
class Term:
    """Tensors autograd keeps per token: ``elements`` values of ``bytes`` each."""

    name: str
    elements: float
    bytes: int
    saved: bool = True  # False: a temporary at the peak (logits, a gradient), not kept for backward

    @property
    def total(self) -> float:
        return self.elements * self.bytes


def _norm_terms(norms: list[tuple[str, bool]], hidden: int, act: int) -> list[Term]:
    terms = []
    for kind, trains in norms:
        if kind == "layer":
            terms += [Term("layer norm input", hidden, act), Term("layer norm mean and rstd", 2, FP32)]
        else:
            # transformers' RMSNorm casts its input to fp32 and keeps it with 1/rms. The normalised
            # input is kept only for the gradient of the norm weight.
            terms += [Term("rms norm input (fp32)", hidden, FP32), Term("rms norm 1/rms", 1, FP32)]
            if trains:
                terms.append(Term("rms norm normalised input", hidden, act))
    return terms


def layer_terms(profile: ModelProfile, block: BlockProfile, setup: MemorySetup, attention: str) -> list[Term]:
    """List what autograd keeps per token in one block that the backward pass runs through.

    Some tensors are kept whether or not the block's weights train, because
    the backward pass needs them to reach the layers below: norm inputs,
    query, key and value with the attention output (fused attention) or the
    seq_len x seq_len probabilities per head (materialized attention), the MLP
    activation's input, both factors of a gated MLP's product, and dropout
    masks. Others are kept only where a linear layer's weight or adapter
    trains: that layer's input, and the rank-r intermediate of a LoRA adapter.
    """
    act = setup.dtype_bytes
    h, f = profile.hidden, profile.intermediate
    terms = _norm_terms(block.norms, h, act)

    for _ in range(block.attention_blocks):
        if attention == "fused":
            terms += [
                Term("query", profile.q_width, act),
                Term("key and value", 2 * profile.kv_width, act),
                Term("attention output", profile.q_width, act),
                Term("attention log-sum-exp", profile.heads, FP32),
            ]
        else:
            # Counted in fp32: PyTorch's math attention computes 16-bit inputs in fp32
            # (measured on the CPU); eager attention may keep some of these in 16 bits.
            scores = profile.heads * setup.seq_len
            terms += [
                Term("query", profile.q_width, FP32),
                Term("key and value", 2 * profile.kv_width, FP32),
                Term("attention probabilities", scores, FP32),
            ]
            if profile.attention_dropout > 0:
                terms.append(Term("attention dropout mask and output", 2 * scores, FP32))

    terms.append(Term("MLP activation function", block.activation_tensors * f, act))
    if block.gated_mlp:
        terms.append(Term("gated MLP factors", 2 * f, act))
    if block.hidden_dropouts:
        terms.append(Term("dropout masks", block.hidden_dropouts * h, act))

    terms += _saved_linear_inputs(block, profile, attention, act)
    return terms


def _saved_linear_inputs(block: BlockProfile, profile: ModelProfile, attention: str, act: int) -> list[Term]:
    """List the inputs kept for weight and adapter gradients; layers of one role and block share one input."""
    terms = []
    seen_groups = set()
    for lin in block.linears:
        if not lin.trains:
            continue
        if lin.adapter_rank:
            terms.append(Term("adapter intermediate", lin.adapter_rank, act))
        if lin.adapter_dropouts:
            # The adapter keeps its dropped input instead of the shared input, plus the mask.
            terms.append(Term("adapter dropout mask and output", 2 * lin.adapter_dropouts * lin.in_features, act))
            if not lin.base_trains:
                continue
        if lin.role == "unknown":
            terms.append(Term("linear input", lin.in_features, act))
            continue
        group = (lin.role, lin.parent if lin.role.startswith("attn") else "mlp")
        if group in seen_groups:
            continue
        seen_groups.add(group)
        if lin.role == "attn_out" and attention == "fused":
            continue  # the fused kernel's saved output is the same tensor
        if lin.role == "mlp_out" and not block.gated_mlp:
            terms.append(Term("MLP activation output", lin.in_features, act))
        else:
            terms.append(Term(f"{lin.role} input", lin.in_features, act))
    return terms


def output_terms(profile: ModelProfile, setup: MemorySetup) -> list[Term]:
    """List what is kept per token outside the blocks: embedding and final norms, the head's input, the loss."""
    act = setup.dtype_bytes
    h = profile.hidden
    terms = []
    if profile.embedding_trains:
        terms += _norm_terms(profile.before_norms, h, act)
        if profile.before_dropouts:
            terms.append(Term("embedding dropout masks", profile.before_dropouts * h, act))
    terms += _norm_terms(profile.after_norms, h, act)
    if profile.after_dropouts:
        terms.append(Term("final dropout masks", profile.after_dropouts * h, act))
    if profile.head_trains:
        terms.append(Term("head input", h, act))
    if profile.task in ("causal-lm", "seq2seq-lm"):
        # The logits come in the training dtype, and the loss casts them to fp32 and keeps the
        # log-softmax. The backward pass then adds the gradient of the logits in fp32.
        terms.append(Term("logits", profile.vocab, act, saved=False))
        if act != FP32:
            terms.append(Term("logits cast to fp32", profile.vocab, FP32, saved=False))
        terms.append(Term("log-softmax", profile.vocab, FP32))
        terms.append(Term("gradient of the log-softmax", profile.vocab, FP32, saved=False))
    return terms


def active_blocks(profile: ModelProfile) -> list[bool]:
    """Mark the blocks the backward pass runs through: those at or above the lowest one with something trainable."""
    active = []
    reached = profile.embedding_trains
    for block in profile.blocks:
        reached = reached or block.any_trainable
        active.append(reached)
    return active


# ---------------------------------------------------------------------------
# The estimate


@dataclass
class MemoryEstimate:
    """Estimated memory of one training step, in bytes."""

    base: str  # precision of the frozen base weights: fp32, bf16, fp16 or 4-bit
    weights: int
    gradients: int
    optimizer: int
    activations: int
    total: int
    fits: bool | None  # None without a device memory to compare with

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_attention(profile: ModelProfile, setup: MemorySetup) -> str:
    if setup.attention is not None:
        return setup.attention
    return "materialized" if profile.attn_implementation == "eager" else "fused"


def activation_bytes(profile: ModelProfile, setup: MemorySetup) -> dict:
    """Return activation memory with its parts: per block (summed over blocks) and outside the blocks."""
    attention = resolve_attention(profile, setup)
    active = active_blocks(profile)
    blocks_bytes = 0.0
    per_block = []
    for block, is_active in zip(profile.blocks, active):
        if not is_active:
            continue
        per_token = sum(t.total for t in layer_terms(profile, block, setup, attention))
        per_block.append(per_token * setup.tokens)
        blocks_bytes += per_token * setup.tokens
    any_active = any(active)
    outside = sum(t.total for t in output_terms(profile, setup)) * setup.tokens if any_active or profile.head_trains else 0
    return {
        "attention": attention,
        "blocks_with_activations": len(per_block),
        "blocks": len(profile.blocks),
        "per_block_bytes": int(max(per_block, default=0)),
        "blocks_bytes": int(blocks_bytes),
        "outside_blocks_bytes": int(outside),
        "total_bytes": int(blocks_bytes + outside),
    }


def estimate_memory(profile: ModelProfile, setup: MemorySetup) -> dict:
    """Estimate training memory for the setup's dtype and, where the base linear weights are frozen, with a 4-bit base."""
    activations = activation_bytes(profile, setup)
    rows = [_estimate_row(profile, setup, activations["total_bytes"], four_bit=False)]
    if not profile.quantizable_trains:
        rows.append(_estimate_row(profile, setup, activations["total_bytes"], four_bit=True))
    return {
        "dtype": setup.dtype,
        "batch_size": setup.batch_size,
        "seq_len": setup.seq_len,
        "device_memory_bytes": setup.device_memory,
        "activations": activations,
        "estimates": [row.to_dict() for row in rows],
    }


def _estimate_row(profile: ModelProfile, setup: MemorySetup, activations: int, four_bit: bool) -> MemoryEstimate:
    dtype = setup.dtype_bytes
    if four_bit:
        quantized = profile.quantizable_frozen_params
        weights = quantized * NF4_BYTES + (profile.params - quantized) * dtype
    else:
        weights = profile.params * dtype
    trainable = profile.trainable_params
    gradients = trainable * dtype
    optimizer = trainable * (ADAMW_STATE_BYTES + (MASTER_WEIGHT_BYTES if dtype < FP32 else 0))
    total = int(weights) + gradients + optimizer + activations
    fits = None if setup.device_memory is None else total <= setup.device_memory
    return MemoryEstimate("4-bit" if four_bit else setup.dtype, int(weights), gradients, optimizer, activations, total, fits)


# ---------------------------------------------------------------------------
# Table


def memory_table(reports: list[dict]) -> str:
    """Format the memory estimates of several methods as one table."""
    from peftlab.reporting import format_table, human_bytes

    first = reports[0]["memory"]
    device = first["device_memory_bytes"]
    headers = ["method", "base", "weights", "gradients", "optimizer", "activations", "total"]
    if device is not None:
        headers.append(f"fits {human_bytes(device)}")
    rows = []
    for report in reports:
        for row in report["memory"]["estimates"]:
            cells = [report["method"], row["base"]] + [human_bytes(row[k]) for k in ("weights", "gradients", "optimizer", "activations", "total")]
            if device is not None:
                cells.append("yes" if row["fits"] else "no")
            rows.append(cells)
    activations = first["activations"]
    title = (
        f"training memory estimate: {first['dtype']}, batch {first['batch_size']} x {first['seq_len']} tokens, "
        f"AdamW, {activations['attention']} attention"
    )
    return title + "\n" + format_table(headers, rows, align_right={2, 3, 4, 5, 6})
