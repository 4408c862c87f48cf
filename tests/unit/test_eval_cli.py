"""`portllm-edge eval` end to end on a tiny model: scores, records the run, fails in one line on bad data."""

from __future__ import annotations

import json

from portllm_edge.cli import main
from portllm_edge.history import get_run, list_runs


def test_eval_with_patch_records_a_run(tiny_pairs, tiny_adapters, shared_data, capsys, tmp_path):
    preds = tmp_path / "preds.json"
    rc = main(
        [
            "eval",
            "--task",
            "sst2",
            "--data",
            str(shared_data / "sst2"),
            "--base",
            str(tiny_pairs["llama"].old),
            "--patch",
            str(tiny_adapters["llama"]),
            "--precision",
            "fp32",
            "--limit",
            "6",
            "--seed",
            "2",
            "--batch-size",
            "4",
            "--json",
            "--predictions",
            str(preds),
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    res, inp = doc["results"], doc["inputs"]
    assert res["task"] == "sst2" and res["n"] == 6 and 0 <= res["correct"] <= 6
    assert res["accuracy"] == res["correct"] / 6
    assert res["ci_low"] <= res["accuracy"] <= res["ci_high"]
    assert res["attach"]["matched_tensors"] == res["attach"]["total_tensors"] > 0
    assert (
        inp["patch"] == tiny_adapters["llama"].name
        and inp["precision"] == "fp32"
        and inp["total_examples"] == 872
    )
    assert "SST-2: 6 of 872 examples" in out.err
    run = get_run(doc["run_id"])
    assert run.kind == "eval" and run.results["accuracy"] == res["accuracy"] and run.inputs["seed"] == 2
    written = json.loads(preds.read_text())
    assert len(written) == 6 and {p["gold"] for p in written} <= {0, 1}
    assert sum(p["correct"] for p in written) == res["correct"]


def test_eval_text_output_and_no_record(tiny_pairs, shared_data, capsys):
    rc = main(
        [
            "eval",
            "--task",
            "winogrande",
            "--data",
            str(shared_data / "winogrande"),
            "--base",
            str(tiny_pairs["qwen2"].new),
            "--precision",
            "fp32",
            "--limit",
            "3",
            "--no-record",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.out.splitlines()[0] == "qwen2-new (fp32)"
    assert "winogrande: accuracy" in out.out and "n=3" in out.out
    assert list_runs() == []


def test_eval_refuses_a_test_split_before_loading_a_model(tmp_path, capsys):
    test_tsv = tmp_path / "test.tsv"
    test_tsv.write_text("index\tsentence\n0\tfine .\n")
    rc = main(["eval", "--task", "sst2", "--data", str(test_tsv), "--base", str(tmp_path / "no-such-model")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "test split" in err and "Fix: Evaluate on dev.tsv" in err


def test_eval_unknown_task_and_bad_normalize(tmp_path, capsys):
    assert main(["eval", "--task", "sst3", "--data", str(tmp_path), "--base", "x"]) == 2
    assert "Did you mean `sst2`?" in capsys.readouterr().err
    assert (
        main(["eval", "--task", "sst2", "--data", str(tmp_path), "--base", "x", "--normalize", "words"]) == 2
    )
    assert "`--normalize` must be one of none, tokens, chars, bytes" in capsys.readouterr().err


def test_eval_gsm8k_few_shot_option(tiny_pairs, shared_data, capsys):
    args = [
        "eval",
        "--task",
        "gsm8k",
        "--data",
        str(shared_data / "gsm8k"),
        "--base",
        str(tiny_pairs["llama"].old),
    ]
    rc = main(
        [
            *args,
            "--precision",
            "fp32",
            "--limit",
            "2",
            "--num-fewshot",
            "1",
            "--max-new-tokens",
            "3",
            "--json",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    res = json.loads(out.out)
    assert res["inputs"]["num_fewshot"] == 1 and res["results"]["options"]["num_fewshot"] == 1
    assert res["results"]["n"] == 2 and res["results"]["strict_match"] in (0.0, 0.5, 1.0)
    assert res["results"]["acc_norm"] is None  # a generation task
    assert (
        main(
            [
                "eval",
                "--task",
                "sst2",
                "--data",
                str(shared_data / "sst2"),
                "--base",
                "x",
                "--num-fewshot",
                "2",
            ]
        )
        == 2
    )
    assert "`--num-fewshot` applies to generation tasks (gsm8k)" in capsys.readouterr().err


def test_eval_patch_goes_through_the_ports_preflight_and_rewrite(tiny_pairs, shared_data, tmp_path, capsys):
    """A patch with a saved ``lm_head`` across a vocabulary change ports (rows carried over by the rewrite);
    eval used to attach the raw folder and fail with a size mismatch."""
    from factories import build_lora_adapter

    pair = tiny_pairs["mistral"]  # its new version has 8 more tokens
    patch = build_lora_adapter(pair.old, tmp_path / "with-head", modules_to_save=["lm_head"])
    argv = ["eval", "--task", "sst2", "--data", str(shared_data / "sst2"), "--base", str(pair.new)]
    rc = main(
        [
            *argv,
            "--patch",
            str(patch),
            "--old",
            str(pair.old),
            "--precision",
            "fp32",
            "--limit",
            "4",
            "--json",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert doc["results"]["attach"]["matched_tensors"] == doc["results"]["attach"]["total_tensors"] > 0
    assert doc["results"]["preflight"]["ok"] is True


def test_failed_eval_is_recorded_with_its_reason(tiny_pairs, tmp_path, capsys):
    bad = tmp_path / "dev.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n')
    rc = main(
        [
            "eval",
            "--task",
            "jsonl",
            "--data",
            str(bad),
            "--base",
            str(tiny_pairs["llama"].new),
            "--template",
            "{nope}",
        ]
    )
    assert rc == 2
    (run,) = list_runs("eval")
    assert run.status == "failed" and run.results["error"] and run.results["error_type"]
