"""The measured jobs cross the worker boundary as JSON and come back equal (workflow/jobs.py)."""

from __future__ import annotations

import json
from pathlib import Path

from portllm_edge.porting.attach import AttachReport
from portllm_edge.porting.offload import Offload
from portllm_edge.training.lora import LoraHyperparams
from portllm_edge.workflow.jobs import FinetuneJob, FinetuneJobResult, PortJob, PortJobResult
from portllm_edge.workflow.types import EvalSpec, EvalSummary


def _through_the_worker(d: dict) -> dict:
    """What the worker's command line and result line do to a dict."""
    return json.loads(json.dumps(d))


def test_port_job_round_trips_every_field_including_the_few_shot_options():
    spec = EvalSpec(
        "gsm8k",
        Path("/data/gsm8k/test.jsonl"),
        limit=12,
        seed=3,
        batch_size=2,
        num_fewshot=2,
        fewshot_data=Path("/data/gsm8k/train.jsonl"),
    )
    job = PortJob(
        Path("/bases/new"),
        Path("/tmp/rewritten"),
        "bf16",
        "cuda:1",
        Offload("auto", {0: 2 << 30, "cpu": 8 << 30}),
        spec,
    )
    back = PortJob.from_json(_through_the_worker(job.to_json()))
    assert back == job
    assert back.evaluate is not None and back.evaluate.num_fewshot == 2
    assert back.evaluate.fewshot_data == Path("/data/gsm8k/train.jsonl")


def test_port_job_result_round_trips_and_ignores_the_workers_extra_keys():
    attach = AttachReport(8, 7, ("x.lora_A.weight",), 0.25, 0.01, True, 1.5)
    res = PortJobResult(
        "nf4", "fp32", "cpu", {"quant_type": "nf4"}, attach, EvalSummary("sst2", 40, 0.75, 0.6, 0.86)
    )
    details = {**_through_the_worker(res.to_json()), "vmhwm_bytes": 123, "peak_anon_rss_bytes": 100}
    back = PortJobResult.from_json(details)
    assert back == res
    assert back.attach.unmatched == ("x.lora_A.weight",) and back.memory is None


def test_finetune_job_round_trips_its_hyperparameters_and_precision():
    train = EvalSpec("sst2", Path("/data/sst2/train.tsv"), limit=32, template=None, verbalizers={"0": "bad"})
    hp = LoraHyperparams(
        r=4, lora_alpha=8, target_modules=("q_proj", "v_proj"), max_steps=3, lora_dropout=0.0
    )
    job = FinetuneJob(Path("/bases/v1"), train, hp, "fp32", qlora=True, device="cpu")
    back = FinetuneJob.from_json(_through_the_worker(job.to_json()))
    assert back == job and back.precision == "nf4"
    assert back.hp.target_modules == ("q_proj", "v_proj")
    res = FinetuneJobResult("nf4", 3, 2.5, None)
    assert FinetuneJobResult.from_json(_through_the_worker(res.to_json())) == res
