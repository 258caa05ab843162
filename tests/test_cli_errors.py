"""Bad input on the command line: one line naming the problem, exit status 2, nothing written."""

import subprocess
import sys

import pytest

from peftlab.cli import main


def _cases(tmp_path, shared_data, tiny_bert):
    sst2 = str(shared_data / "sst2")
    one_class = tmp_path / "one_class.csv"
    one_class.write_text("text,label\na,x\nb,x\nc,x\n")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text('{"model_type": "bert"}')
    return [
        ("unknown method", ["compare", "--methods", "lora,magic"], "unknown method 'magic'; valid methods are adalora, bitfit, boft, dora, fourierft, full, head, ia3, ln-tuning, loha, lokr, lora, oft, olora, p-tuning, pissa, prefix-tuning, prompt-tuning, rslora, top-layers:N, vera, or all"),
        ("unknown model alias", ["compare", "--model", "gpt9"], "unknown model alias 'gpt9': valid aliases are minilm"),
        ("missing model folder", ["compare", "--model", "./no/such/model"], "model folder not found: './no/such/model'"),
        ("model folder without weights", ["compare", "--model", str(no_weights)], "has no weights (model.safetensors)"),
        ("lora rank zero", ["compare", "--lora-r", "0"], "--lora-r must be an integer of at least 1, got 0"),
        ("missing target module", ["train", "--method", "lora", "--target-modules", "q_proj"], "target module 'q_proj' for method 'lora' does not exist in this model; linear layers it has: dense, key, query, value"),
        ("target not linear", ["train", "--method", "lora", "--target-modules", "LayerNorm"], "target module 'LayerNorm' for method 'lora' is a LayerNorm, not a linear layer"),
        ("missing data path", ["compare", "--data", str(tmp_path / "missing")], "data path not found"),
        ("one-class train", ["compare", "--data", str(one_class)], "has only one class ('x')"),
        ("zero max steps", ["compare", "--max-steps", "0"], "--max-steps must be a positive integer, got 0"),
        ("negative learning rate", ["compare", "--lr", "-0.001"], "--lr must be a positive number, got -0.001"),
        ("non-numeric rank", ["compare", "--lora-r", "eight"], "argument --lora-r: invalid int value: 'eight'"),
        ("unknown method option", ["compare", "--method-arg", "use_dora=true"], "--method-arg 'use_dora' is not an option of full, head, lora"),
        ("duplicate method", ["compare", "--methods", "lora,lora"], "--methods lists a method twice: lora,lora"),
        ("train with two methods", ["train", "--method", "full,lora"], "unknown method 'full,lora'"),
        ("label names too few", ["compare", "--data", sst2, "--label-names", "neg"], "--label-names gives 1 names (neg) but"),
        ("eval of a missing artifact", ["eval", str(tmp_path / "nothing")], "artifact folder not found"),
        ("eval of a non-artifact folder", ["eval", str(tmp_path)], "is not a peftlab artifact"),
        ("unknown params method", ["params", "--method", "nope"], "unknown method 'nope'"),
    ]


CASE_NAMES = [
    "unknown method", "unknown model alias", "missing model folder", "model folder without weights", "lora rank zero",
    "missing target module", "target not linear", "missing data path", "one-class train", "zero max steps",
    "negative learning rate", "non-numeric rank", "unknown method option", "duplicate method", "train with two methods",
    "label names too few", "eval of a missing artifact", "eval of a non-artifact folder", "unknown params method",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_one_line_exit_2(name, tmp_path, shared_data, tiny_bert, capsys):
    cases = {case[0]: case[1:] for case in _cases(tmp_path, shared_data, tiny_bert)}
    argv, expected = cases[name]
    out = tmp_path / "run"
    if argv[0] in ("compare", "train"):
        argv = argv + ["--out", str(out)]
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2
    assert len(errors) == 1, captured.err
    assert lines[-1] == errors[0]  # progress lines may come first, the error closes the output
    assert expected in errors[0]
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_error_has_no_traceback_in_real_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "peftlab", "compare", "--methods", "nope", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr == "error: unknown method 'nope'; valid methods are adalora, bitfit, boft, dora, fourierft, full, head, ia3, ln-tuning, loha, lokr, lora, oft, olora, p-tuning, pissa, prefix-tuning, prompt-tuning, rslora, top-layers:N, vera, or all\n"
    assert not (tmp_path / "run").exists()


def test_out_folder_with_results_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("{}")
    code = main(["compare", "--max-steps", "1", "--out", str(out)])
    assert code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "{}"
