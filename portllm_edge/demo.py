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
5. evaluate the four configurations of the PortLLM table and measure the peak memory
   of a LoRA fine-tune of v2 and of a port, each in its own worker process;
6. port the v1 patch onto v2 loaded in NF4, training-free, measured in a worker.

Steps 2-6 are :func:`portllm_edge.workflow.experiment.experiment`, which goes through the
workflow layer (every step recorded). A second run reuses steps 1-5 (keyed by weight
fingerprints) and re-runs the port itself.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from portllm_edge import paths
from portllm_edge.fsutil import atomic_write_text
from portllm_edge.workflow.experiment import ExperimentResult, ExperimentSettings, ExperimentTask, Say

__all__ = ["ExperimentResult", "ExperimentSettings", "ExperimentTask", "make_demo_task", "run_demo"]

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


def run_demo(
    gguf: Path,
    *,
    settings: ExperimentSettings | None = None,
    say: Say = print,
    progress_factory: Callable[[str], Any] | None = None,
    fresh: bool = False,
) -> ExperimentResult:
    """The embedded default: SmolLM2 GGUF as v1, pydoc prose as the update corpus, the generated tagging task."""
    from portllm_edge.models.gguf import import_gguf
    from portllm_edge.workflow.experiment import experiment

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
    return experiment(
        v1_dir,
        [corpus],
        task,
        settings=settings,
        v2_name=f"{v1_dir.name}-demo-v2",
        say=say,
        progress_factory=progress_factory,
        fresh=fresh,
    )
