"""Mixed precision and 4-bit quantization: the choices on each machine, the rejections, and QLoRA where CUDA is present."""

import importlib.util

import pytest
import torch

from peftlab import RunConfig
from peftlab.cli import main
from peftlab.errors import PeftlabError
from peftlab.precision import check_quantize, precision_arguments, resolve_precision

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_bitsandbytes = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")


def test_auto_precision_fp32_on_cpu():
    assert resolve_precision("auto", cuda=False) == "fp32"


def test_explicit_precision_kept():
    assert resolve_precision("bf16", cuda=False) == "bf16"
    assert resolve_precision("fp32", cuda=True) == "fp32"
    assert resolve_precision("fp16", cuda=True) == "fp16"


def test_fp16_rejected_without_cuda():
    with pytest.raises(PeftlabError, match=r"^--precision fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cuda=False)


@pytest.mark.parametrize(
    "precision, flags",
    [("fp32", {"bf16": False, "fp16": False}), ("bf16", {"bf16": True, "fp16": False}), ("fp16", {"bf16": False, "fp16": True})],
)
def test_precision_training_flags(precision, flags):
    assert precision_arguments(precision) == flags


def test_invalid_quantize_value():
    with pytest.raises(PeftlabError, match=r"^--quantize must be one of none, 4bit, got '8bit'$"):
        RunConfig(quantize="8bit")


def test_invalid_precision_value():
    with pytest.raises(PeftlabError, match=r"^--precision must be one of auto, fp32, bf16, fp16, got 'fp8'$"):
        RunConfig(precision="fp8")


def test_quantize_none_accepted_anywhere():
    check_quantize(RunConfig(methods=["full"]), cuda=False)


def test_quantize_rejected_without_cuda():
    with pytest.raises(PeftlabError, match=r"^--quantize 4bit needs a CUDA GPU"):
        check_quantize(RunConfig(methods=["lora"], quantize="4bit"), cuda=False)


def test_quantize_rejected_without_bitsandbytes(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a))
    with pytest.raises(PeftlabError, match=r"needs the bitsandbytes package, which is not installed: run `pip install bitsandbytes`$"):
        check_quantize(RunConfig(methods=["lora"], quantize="4bit"), cuda=True)


def test_quantize_rejects_methods_training_base_weights(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else real_find_spec(name, *a))
    with pytest.raises(PeftlabError, match=r"but full, top-layers:2 trains them; use an adapter method such as lora$"):
        check_quantize(RunConfig(methods=["full", "lora", "top-layers:2"], quantize="4bit"), cuda=True)
    check_quantize(RunConfig(methods=["lora", "ia3", "head"], quantize="4bit"), cuda=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_quantize_on_cpu_one_line(capsys, tiny_bert):
    code = main(["train", "--model", str(tiny_bert), "--method", "lora", "--quantize", "4bit", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "error: --quantize 4bit needs a CUDA GPU (bitsandbytes' 4-bit kernels) and none was found; drop --quantize to train in fp32 on the CPU\n"


@needs_cuda
def test_auto_precision_mixed_on_cuda(tmp_path):
    from peftlab.training import training_arguments

    precision = resolve_precision("auto")
    assert precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    args = training_arguments(RunConfig(), 1e-3, tmp_path, quiet=True)
    assert (args.bf16, args.fp16) == (precision == "bf16", precision == "fp16")


@needs_cuda
@needs_bitsandbytes
def test_qlora_trains_tiny_bert(tiny_bert, tmp_path):
    from peftlab.runner import train

    results = train(RunConfig(model=str(tiny_bert), methods=["lora"], quantize="4bit", max_steps=2, batch_size=4, out=str(tmp_path / "q")), quiet=True)
    run = results["runs"][0]
    assert run["status"] == "ok"
    assert run["train_steps"] == 2
    assert (tmp_path / "q" / "lora" / "adapter_model.safetensors").is_file()
