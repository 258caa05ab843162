"""What peftlab loads and reaches: safetensors unless --allow-pickle, and the hub only for a hub id."""

import json
import socket

import datasets
import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file

from peftlab import RunConfig
from peftlab.errors import PeftlabError
from peftlab.models import load_classifier, resolve_model
from peftlab.runner import prepare


@pytest.fixture
def pickled_bert(tmp_path, tiny_bert):
    """The tiny BERT with its weights stored as pytorch_model.bin instead of safetensors."""
    folder = tmp_path / "pickled"
    folder.mkdir()
    for file in tiny_bert.iterdir():
        if file.name == "model.safetensors":
            torch.save(load_file(file), folder / "pytorch_model.bin")
        else:
            (folder / file.name).write_bytes(file.read_bytes())
    return folder


def test_pickled_model_rejected_by_default(pickled_bert):
    with pytest.raises(PeftlabError, match=r"contains only pickled weights \(pytorch_model.bin\).*--allow-pickle"):
        resolve_model(str(pickled_bert))


def test_pickled_model_loads_with_allow_pickle(pickled_bert, tiny_bert):
    source = resolve_model(str(pickled_bert), allow_pickle=True)
    pickled = load_classifier(source, ["a", "b"], seed=0).model
    safe = load_classifier(resolve_model(str(tiny_bert)), ["a", "b"], seed=0).model
    assert source.allow_pickle is True
    for (name, value), (_, expected) in zip(pickled.state_dict().items(), safe.state_dict().items()):
        assert torch.equal(value, expected), name


def test_remote_code_flag_reaches_source(tiny_bert):
    assert resolve_model(str(tiny_bert)).trust_remote_code is False
    assert resolve_model(str(tiny_bert), trust_remote_code=True).trust_remote_code is True


@pytest.fixture
def hub_online_but_unreachable(monkeypatch):
    """Turn the offline switches off and make every name lookup and connection fail, recording the attempts.

    Nothing leaves the machine: the lookup fails before any query is sent.
    """
    attempts = []

    def refuse_lookup(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(f"name lookup of {host} blocked by the test")

    def refuse_connect(sock, address):
        attempts.append(address)
        raise OSError(f"connection to {address} blocked by the test")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    return attempts


def test_local_model_and_data_reach_no_network(hub_online_but_unreachable, tiny_bert, small_csv_data):
    prepared = prepare(RunConfig(model=str(tiny_bert), data=str(small_csv_data), methods=["lora"]))
    assert prepared.source.kind == "local"
    assert hub_online_but_unreachable == []


def test_hub_id_is_the_only_network_use(hub_online_but_unreachable, tiny_bert):
    with pytest.raises(PeftlabError, match="could not load model 'some-org/some-model' from the Hugging Face hub"):
        prepare(RunConfig(model="some-org/some-model", methods=["lora"]))
    assert hub_online_but_unreachable != []


class _StopHere(BaseException):
    """Ends training like a crash, so the checkpoint stays on disk."""


def test_checkpoint_weights_in_safetensors(tmp_path, tiny_bert, small_csv_data, monkeypatch):
    from transformers import TrainerCallback

    from peftlab import runner

    class StopAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise _StopHere

    original = runner.train_resumable
    monkeypatch.setattr(runner, "train_resumable", lambda trainer, *args: trainer.add_callback(StopAfterCheckpoint()) or original(trainer, *args))
    out = tmp_path / "run"
    with pytest.raises(_StopHere):
        runner.compare(RunConfig(model=str(tiny_bert), data=str(small_csv_data), methods=["lora"], max_steps=3, batch_size=4, save_steps=1, out=str(out)), quiet=True)

    checkpoint = out / "checkpoints" / "lora" / "checkpoint-1"
    files = {p.name for p in checkpoint.iterdir()}
    assert "adapter_model.safetensors" in files
    # Torch files: optimizer, scheduler and RNG states, which transformers 5.25 reloads with
    # torch.load(weights_only=True), and training_args.bin, which it writes but never reloads.
    assert {name for name in files if name.endswith((".bin", ".pt", ".pth"))} == {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"}
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 1
