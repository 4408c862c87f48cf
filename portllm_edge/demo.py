"""The embedded default: the whole PortLLM path on SmolLM2-135M-Instruct, offline after set-up.

``make demo`` (``portllm-edge demo --gguf FILE``) runs, caching every artifact:

1. import the SmolLM2-135M-Instruct GGUF as base **v1**;
2. make **v2** by continued pretraining of v1 on the prose that Python ships
   (``pydoc_data.topics``), as PortLLM (§4.1) simulates an update;
3. generate a deterministic task (everyday sentences that mention an animal or a
   vehicle; the model answers "animal" or "vehicle"; evaluation sentences name items
   never seen in training; SmolLM2-135M answers it at chance zero-shot) and train a
   LoRA patch on **v1**;
4. train v2's own LoRA with the same hyperparameters (the baseline);
5. port the v1 patch onto v2 loaded in NF4, training-free;
6. print the accuracy table and the peak memory of porting vs LoRA fine-tuning
   (each measured in its own subprocess) and their ratio.

A second run reuses steps 1-4 and the measurements (keyed by weight fingerprints),
and re-runs the port itself.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portllm_edge import paths
from portllm_edge.fsutil import atomic_write_json, atomic_write_text

DEMO_TASK = "jsonl"
DEMO_TEMPLATE = "Sentence: {text}\nQuestion: is the thing in the sentence an animal or a vehicle?\nAnswer:"
DEMO_VERBALIZERS = {"animal": "animal", "vehicle": "vehicle"}
DEMO_TASK_FOLDER = "animal-or-vehicle"
"""Folder of the demo task's files: reports name a ``jsonl`` task after its file (``animal-or-vehicle/dev.jsonl``)."""

ANIMALS = [
    "cat",
    "dog",
    "horse",
    "cow",
    "sheep",
    "goat",
    "rabbit",
    "fox",
    "wolf",
    "bear",
    "deer",
    "lion",
    "tiger",
    "zebra",
    "giraffe",
    "elephant",
    "monkey",
    "mouse",
    "squirrel",
    "owl",
    "eagle",
    "duck",
    "goose",
    "swan",
    "parrot",
    "pigeon",
    "frog",
    "turtle",
    "snake",
    "lizard",
    "camel",
    "donkey",
    "pig",
    "hedgehog",
    "otter",
    "beaver",
    "badger",
    "moose",
    "kangaroo",
    "koala",
    "panda",
    "penguin",
    "dolphin",
    "whale",
    "seal",
    "bat",
    "hamster",
    "crow",
]
VEHICLES = [
    "car",
    "bus",
    "truck",
    "bicycle",
    "motorcycle",
    "train",
    "tram",
    "taxi",
    "van",
    "tractor",
    "scooter",
    "airplane",
    "helicopter",
    "boat",
    "ship",
    "ferry",
    "canoe",
    "yacht",
    "submarine",
    "rocket",
    "jeep",
    "minivan",
    "ambulance",
    "firetruck",
    "limousine",
    "pickup",
    "trolley",
    "sled",
    "wagon",
    "carriage",
    "glider",
    "jet",
    "kayak",
    "raft",
    "sailboat",
    "tank",
    "bulldozer",
    "forklift",
    "moped",
    "skateboard",
    "snowmobile",
    "hovercraft",
    "caravan",
    "coach",
    "subway",
    "monorail",
    "unicycle",
    "tricycle",
]
TEMPLATES = [
    "I saw a {x} near the river this morning.",
    "There was a {x} outside our house yesterday.",
    "My neighbour keeps talking about her new {x}.",
    "The children pointed at the {x} and laughed.",
    "A {x} appeared at the end of the street.",
    "We watched a {x} for almost an hour.",
    "Nobody expected to find a {x} in the old barn.",
    "The photo shows a {x} in the snow.",
    "Grandpa told us a story about a {x}.",
    "A red {x} went past the school.",
    "The book has a picture of a {x} on the cover.",
    "Everyone at the party wanted to see the {x}.",
]


def make_demo_task(
    out_dir: Path, *, seed: int = 0, n_train: int = 384, n_dev: int = 192
) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``dev.jsonl`` of the demo tagging task (fields ``text``, ``label``).

    Items are split so that dev sentences name animals and vehicles never seen in
    training: the patch must learn the category, not the words. Deterministic for a seed.
    """
    rng = random.Random(seed)
    animals, vehicles = ANIMALS[:], VEHICLES[:]
    rng.shuffle(animals)
    rng.shuffle(vehicles)
    split = 36

    def rows(items_a: list[str], items_v: list[str], n: int) -> list[dict[str, str]]:
        out = []
        for i in range(n):
            label = "animal" if i % 2 == 0 else "vehicle"
            item = rng.choice(items_a if label == "animal" else items_v)
            out.append({"text": rng.choice(TEMPLATES).format(x=item), "label": label})
        rng.shuffle(out)
        return out

    train = rows(animals[:split], vehicles[:split], n_train)
    dev = rows(animals[split:], vehicles[split:], n_dev)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, dev_path = out_dir / "train.jsonl", out_dir / "dev.jsonl"
    atomic_write_text(train_path, "".join(json.dumps(r) + "\n" for r in train))
    atomic_write_text(dev_path, "".join(json.dumps(r) + "\n" for r in dev))
    return train_path, dev_path


def write_pydoc_corpus(out: Path) -> Path:
    """Write the prose of ``pydoc_data.topics`` (ships with CPython) as one text file; returns its path."""
    from pydoc_data.topics import topics

    if not out.exists():
        atomic_write_text(out, "\n\n".join(topics[k] for k in sorted(topics)))
    return out


@dataclass(frozen=True)
class ExperimentSettings:
    """Sizes of a v1 -> v2 porting experiment; the defaults fit the demo in 10 minutes on 2 CPU cores."""

    update_steps: int = 30
    update_seq_len: int = 128
    update_batch: int = 4
    update_lr: float = 5e-5
    lora_steps: int = 48
    lora_r: int = 8
    lora_alpha: int = 16
    lora_lr: float = 1e-3
    batch_size: int = 8
    max_length: int = 48
    train_limit: int | None = None
    eval_limit: int | None = 192
    precision: str = "auto"
    measure_steps: int = 4
    seed: int = 0


DemoSettings = ExperimentSettings

Say = Callable[[str], None]


@dataclass(frozen=True)
class ExperimentTask:
    """What to train and evaluate on.

    Attributes:
        task: task name (``sst2``, ``jsonl`` ...).
        train_data / eval_data: files.
        template / verbalizers: for the ``jsonl`` task.
        title: shown in the table's title.
        patch_name: store name of the v1 patch (the v2 baseline gets ``-v2-own-lora``).
    """

    task: str
    train_data: Path
    eval_data: Path
    title: str
    patch_name: str
    template: str | None = None
    verbalizers: dict[str, str] | None = None


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_experiment(
    v1_ref: str | Path,
    corpus: list[Path],
    task: ExperimentTask,
    *,
    settings: ExperimentSettings | None = None,
    v2_name: str | None = None,
    say: Say = print,
    progress_factory: Callable[[str], Any] | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """The main job end to end, caching every artifact: v1 -> v2, patch on v1, baseline on v2, port, compare, measure.

    Args:
        v1_ref: the old base (a ``.gguf`` file is imported into the model store once).
        corpus: plain-text files for the continued-pretraining update.
        task: what to train and evaluate on.
        settings: sizes; see :class:`ExperimentSettings`.
        v2_name: model-store name of v2 (default ``<v1>-<task.patch_name>-v2``).
        say: prints one status line.
        progress_factory: ``label -> context manager yielding update(step, total, loss)``.
        fresh: recompute the cached comparison and measurements (models and patches are reused).

    Returns:
        A JSON-ready summary: ``rows`` (the PortLLM table), ``recovered_gain``, ``memory`` (port and
        fine-tune measurements), ``ratio`` (fine-tune peak / port peak), ``metric``, ``update`` and ``port``.
    """
    import contextlib

    from portllm_edge.measure import measure_job
    from portllm_edge.models import resolve_base
    from portllm_edge.patches import PatchStore
    from portllm_edge.porting.compare import compare_patch
    from portllm_edge.training.lora import LoraHyperparams
    from portllm_edge.training.patch import train_patch
    from portllm_edge.training.update import simulate_update
    from portllm_edge.workflow import port

    s = settings or ExperimentSettings()
    bar = progress_factory or (lambda _label: contextlib.nullcontext(None))
    work = paths.cache_dir() / "experiments"
    work.mkdir(parents=True, exist_ok=True)

    say("1/6 base v1")
    v1 = resolve_base(str(v1_ref))
    v1_fp = v1.fingerprint()

    say("2/6 base v2: continued pretraining of v1 (a simulated update)")
    v2_name = v2_name or f"{v1.path.name}-{task.patch_name}-v2"
    v2_dir = paths.models_dir() / v2_name
    v2_meta = v2_dir / "portllm_update.json"
    update_key = _key(
        v1_fp, [str(c) for c in corpus], s.update_steps, s.update_seq_len, s.update_batch, s.update_lr, s.seed
    )
    cached_v2 = v2_meta.is_file() and json.loads(v2_meta.read_text()).get("experiment_key") == update_key
    if cached_v2:
        say("    (cached)")
    else:
        with bar("continued pretraining") as update:
            simulate_update(
                v1.path,
                corpus,
                v2_dir,
                steps=s.update_steps,
                seq_len=s.update_seq_len,
                batch_size=s.update_batch,
                learning_rate=s.update_lr,
                seed=s.seed,
                force=True,
                progress=update,
            )
        meta = json.loads(v2_meta.read_text())
        meta["experiment_key"] = update_key
        atomic_write_json(v2_meta, meta)
    update_record = json.loads(v2_meta.read_text())
    v2 = resolve_base(v2_name)
    v2_fp = v2.fingerprint()

    hp = LoraHyperparams(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        max_steps=s.lora_steps,
        learning_rate=s.lora_lr,
        batch_size=s.batch_size,
        max_length=s.max_length,
        seed=s.seed,
        lora_dropout=0.0,
    )
    store = PatchStore()
    train_key = _key(hp.__dict__, s.train_limit, str(task.train_data), task.template, task.verbalizers)

    def ensure_patch(name: str, base: Any, fingerprint: str, label: str) -> None:
        m = {m.name: m for m in store.list()}.get(name)
        if (
            m is not None
            and m.source_base is not None
            and m.source_base.fingerprint == fingerprint
            and any(e.note and train_key in e.note for e in m.lineage)
        ):
            say("    (cached)")
            return
        with bar(label) as update:
            train_patch(
                str(base.path),
                task.task,
                task.train_data,
                name=name,
                hp=hp,
                limit=s.train_limit,
                template=task.template,
                verbalizers=task.verbalizers,
                force=True,
                progress=update,
                note=f"experiment key {train_key}",
            )

    baseline = f"{task.patch_name}-v2-own-lora"
    say(f"3/6 patch: LoRA fine-tune of v1 on {task.task} ({task.patch_name})")
    ensure_patch(task.patch_name, v1, v1_fp, "LoRA on v1")
    say("4/6 baseline: LoRA fine-tune of v2 with the same hyperparameters")
    ensure_patch(baseline, v2, v2_fp, "LoRA on v2")

    from dataclasses import replace as _replace

    from portllm_edge.models.refs import resolve_base
    from portllm_edge.porting.load import default_device, resolve_precision

    device = default_device()  # the planner's device: plan, port and both measurements use it
    s = _replace(s, precision=resolve_precision(s.precision, device, resolve_base(v2_name)))
    say(f"5/6 port: {task.patch_name} onto v2 at {s.precision} (planner's choice on {device}), training-free")
    ported = port(
        task.patch_name, v2_name, precision=s.precision, overwrite=True, on_phase=lambda p: say(f"    {p}")
    )

    say("6/6 evaluate four configurations and measure peak memory (port vs LoRA fine-tune)")
    results_path = work / f"{task.patch_name}-results.json"
    result_key = _key(
        v1_fp,
        v2_fp,
        s,
        str(task.eval_data),
        store.get(task.patch_name).manifest.files,
        store.get(baseline).manifest.files,
    )
    cached = None
    if results_path.is_file() and not fresh:
        data = json.loads(results_path.read_text())
        cached = data if data.get("key") == result_key else None
    if cached is not None:
        say("    (cached)")
        summary = cached["summary"]
    else:
        cmp = compare_patch(
            task.patch_name,
            old=str(v1.path),
            new=v2_name,
            task=task.task,
            data=task.eval_data,
            limit=s.eval_limit,
            seed=s.seed,
            precision=s.precision,
            baseline=baseline,
            template=task.template,
            verbalizers=task.verbalizers,
            batch_size=s.batch_size,
            on_row=lambda r: say(f"    {r}"),
        )
        common = {
            "base": str(v2.path),
            "task": task.task,
            "template": task.template,
            "verbalizers": task.verbalizers,
            "batch_size": s.batch_size,
            "seed": s.seed,
            "device": device,
        }
        say(f"    measuring: port ({s.precision} load + attach + evaluate a batch) in a subprocess")
        port_mem = measure_job(
            "port",
            {
                **common,
                "adapter": str(store.get(task.patch_name).adapter_dir),
                "precision": s.precision,
                "eval_data": str(task.eval_data),
                "limit": s.batch_size * 4,
            },
        )
        from portllm_edge.measure.bench import default_finetune_dtype

        ft_dtype = default_finetune_dtype(device)
        say(f"    measuring: LoRA fine-tune of v2 ({ft_dtype}, a few AdamW steps) in a subprocess")
        ft_mem = measure_job(
            "lora_finetune",
            {
                **common,
                "dtype": ft_dtype,
                "train_data": str(task.train_data),
                "train_limit": s.batch_size * s.measure_steps,
                "steps": s.measure_steps,
                "r": s.lora_r,
                "lora_alpha": s.lora_alpha,
                "max_length": s.max_length,
            },
        )
        bench_run = _record_bench(v2, task, s, ft_dtype, ft_mem, port_mem)
        summary = {
            "task": task.title,
            "precision": s.precision,
            "rows": [
                {
                    "config": r.config,
                    "base": r.base_id,
                    "accuracy": r.accuracy,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "n": r.n,
                }
                for r in cmp.rows
            ],
            "recovered_gain": cmp.recovered_gain(),
            "memory": {"port": port_mem.to_dict(), "lora_finetune": ft_mem.to_dict()},
            "ratio": ft_mem.peak_bytes / port_mem.peak_bytes,
            "metric": port_mem.metric,
            "update": {
                "steps": update_record.get("steps"),
                "perplexity_before": update_record.get("perplexity_before"),
                "perplexity_after": update_record.get("perplexity_after"),
                "mean_linear_drift": update_record.get("mean_linear_drift"),
            },
            "compare_run": cmp.run_id,
            "bench_run": bench_run,
        }
        atomic_write_json(results_path, {"key": result_key, "summary": summary})
    summary["port"] = {
        "ported_name": ported.ported_name,
        "phases": ported.phases,
        "matched": f"{ported.attach.matched_tensors}/{ported.attach.total_tensors}",
        "run_id": ported.run_id,
    }
    return summary


def _record_bench(
    v2: Any, task: ExperimentTask, s: ExperimentSettings, ft_dtype: str, ft_mem: Any, port_mem: Any
) -> str:
    """Record the experiment's two measurements as a ``bench`` run, so ``report`` shows the ratio."""
    from portllm_edge.measure.bench import BenchResult, _summarize
    from portllm_edge.runs import record_run

    configs = [_summarize(f"lora_{ft_dtype}", [ft_mem]), _summarize(f"port_{s.precision}", [port_mem])]
    result = BenchResult(
        base=str(v2.path),
        task=task.task,
        precision=s.precision,
        seq_len=s.max_length,
        batch_size=s.batch_size,
        configs=configs,
        ratio=ft_mem.peak_bytes / port_mem.peak_bytes,
        ratio_metric=f"{port_mem.metric} (median of 1)",
    )
    return record_run(
        "bench",
        {
            "base": str(v2.path),
            "task": task.task,
            "train_data": str(task.train_data),
            "eval_data": str(task.eval_data),
            "precision": s.precision,
            "seq_len": s.max_length,
            "batch_size": s.batch_size,
            "steps": s.measure_steps,
            "repeats": 1,
            "r": s.lora_r,
            "lora_alpha": s.lora_alpha,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        },
        result.to_dict(),
    )


def run_demo(
    gguf: Path,
    *,
    settings: ExperimentSettings | None = None,
    say: Say = print,
    progress_factory: Callable[[str], Any] | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """The embedded default: SmolLM2 GGUF as v1, pydoc prose as the update corpus, the generated tagging task."""
    from portllm_edge.models.gguf import import_gguf

    say("base v1 from the GGUF file (converted once, then reused)")
    v1_dir = import_gguf(gguf, reuse=True)
    work = paths.cache_dir() / "demo"
    train_path, dev_path = make_demo_task(
        work / DEMO_TASK_FOLDER, seed=(settings or ExperimentSettings()).seed
    )
    corpus = write_pydoc_corpus(work / "pydoc_topics.txt")
    task = ExperimentTask(
        task=DEMO_TASK,
        train_data=train_path,
        eval_data=dev_path,
        title="demo task: animal or vehicle? (evaluation items unseen in training)",
        patch_name="demo-tags",
        template=DEMO_TEMPLATE,
        verbalizers=DEMO_VERBALIZERS,
    )
    return run_experiment(
        v1_dir,
        [corpus],
        task,
        settings=settings,
        v2_name=f"{v1_dir.name}-demo-v2",
        say=say,
        progress_factory=progress_factory,
        fresh=fresh,
    )
