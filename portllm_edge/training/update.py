"""Simulate a base-model update by full-parameter continued pretraining on plain text.

PortLLM (Khan et al., ICLR 2025, §4.1) builds "updated" base versions by continued
pretraining of the original model on new data; users run the same to stress-test
a patch before a real update arrives. We train every parameter with AdamW on
next-token prediction over ``seq_len``-token blocks of the corpus, save the
result as a new safetensors folder (with the tokenizer), and record the relative
weight drift ‖W_new − W_old‖_F / ‖W_old‖_F of every linear module, plus
held-out perplexity before and after (the last 10 % of blocks, at most 16).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.errors import ConfigError, DataError, TrainingError
from portllm_edge.fsutil import atomic_dir, unwritable_reason

DRIFT_FILE = "portllm_update.json"
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


@dataclass
class UpdateResult:
    """A finished continued-pretraining run.

    Attributes:
        out_dir: the updated base model folder.
        steps: optimizer steps.
        seconds: training wall time, seconds.
        losses: loss per step.
        perplexity_before: held-out perplexity of the old base.
        perplexity_after: held-out perplexity of the new base.
        drift: ``{module name: ‖W_new − W_old‖_F / ‖W_old‖_F}`` for every 2-D weight.
        mean_linear_drift: the mean of ``drift`` over linear (``*_proj``) modules.
    """

    out_dir: Path
    steps: int
    seconds: float
    losses: list[float]
    perplexity_before: float
    perplexity_after: float
    drift: dict[str, float] = field(default_factory=dict)
    mean_linear_drift: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


def read_corpus(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Read plain-text documents from files and folders (``*.txt``, ``*.md``, ``*.rst``, recursively).

    Raises:
        DataError: a path does not exist, or no text was found.
    """
    docs: list[str] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise DataError(
                f"corpus {p}: no such file or folder.", hint="pass plain-text files or a folder of them"
            )
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in TEXT_SUFFIXES) if p.is_dir() else [p]
        for f in files:
            try:
                text = f.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise DataError(
                    f"corpus {f}: cannot read ({exc.strerror}).", hint="check permissions"
                ) from exc
            if text.strip():
                docs.append(text)
    if not docs:
        raise DataError(
            f"corpus {', '.join(map(str, paths))}: no text found.",
            hint="pass UTF-8 plain-text files (.txt, .md, .rst) or a folder of them",
        )
    return docs


def _perplexity(model: Any, blocks: list[list[int]], device: Any) -> float:
    import torch

    if not blocks:
        return float("nan")
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for b in blocks:
            ids = torch.tensor([b], device=device)
            out = model(input_ids=ids, labels=ids)
            total += float(out.loss) * (len(b) - 1)
            count += len(b) - 1
    return math.exp(total / count)


def relative_drift(old_state: dict[str, Any], new_model: Any) -> dict[str, float]:
    """``{name: ‖W_new − W_old‖_F / ‖W_old‖_F}`` for every 2-D parameter (embeddings and linears)."""
    import torch

    out: dict[str, float] = {}
    with torch.no_grad():
        for name, p in new_model.named_parameters():
            old = old_state.get(name)
            if old is None or p.dim() != 2 or old.shape != p.shape:
                continue
            denom = float(old.float().norm())
            if denom > 0:
                out[name.removesuffix(".weight")] = float((p.float() - old.float()).norm()) / denom
    return out


def _pretrain(
    model: Any,
    train: list[list[int]],
    steps: int,
    batch_size: int,
    learning_rate: float,
    device: Any,
    progress: Callable[[int, int, float], None] | None,
) -> tuple[list[float], float]:
    """``steps`` AdamW steps of next-token prediction over ``train`` blocks (cycled); returns (losses, seconds).

    Raises:
        TrainingError: the loss became NaN/Inf.
    """
    import torch

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    losses: list[float] = []
    start = time.perf_counter()
    cursor = 0
    for step in range(steps):
        batch = [train[(cursor + i) % len(train)] for i in range(batch_size)]
        cursor += batch_size
        ids = torch.tensor(batch, device=device)
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        if not torch.isfinite(loss):
            raise TrainingError(
                f"continued pretraining loss became {float(loss)} at step {step + 1}.", hint="lower --lr"
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, steps, losses[-1])
    return losses, time.perf_counter() - start


def check_update_args(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    steps: int,
    seq_len: int,
    batch_size: int,
    learning_rate: float,
    chain_item: str | None = None,
    model_store_entry: bool = False,
) -> None:
    """Refuse settings that would crash the run, change nothing, or overwrite the base itself.

    Args:
        chain_item: the ``--chain`` item ``STEPS:LR`` that ``steps`` and ``learning_rate`` come
            from, named in their errors instead of ``--steps``/``--lr``.
        model_store_entry: ``out_dir`` is a model store entry written on the store's behalf
            (the demo's v2; :func:`~portllm_edge.fsutil.unwritable_reason`).

    Raises:
        ConfigError: naming the option and a valid value.
    """
    if chain_item is None:
        steps_name, lr_name, example = "`--steps`", "`--lr`", "--steps 50 --seq-len 256 --batch-size 4"
    else:
        steps_name, lr_name = (
            f"STEPS of `--chain` item '{chain_item}'",
            f"LR of `--chain` item '{chain_item}'",
        )
        example = "--chain 10:2e-5,20:5e-5 --seq-len 256 --batch-size 4"
    for name, value, least in (
        (steps_name, steps, 1),
        ("`--seq-len`", seq_len, 2),
        ("`--batch-size`", batch_size, 1),
    ):
        if value < least:
            raise ConfigError(
                f"{name} must be at least {least}, got {value}.",
                hint=f"pass {least} or more (e.g. {example})",
            )
    if not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ConfigError(
            f"{lr_name} must be a positive number, got {learning_rate}.", hint="typical values: 1e-5 to 5e-5"
        )
    base, out = Path(base_dir).resolve(), Path(out_dir).resolve()
    if out == base or out in base.parents or base in out.parents:
        raise ConfigError(
            f"{out_dir}: `--out` is (or overlaps) the base folder {base_dir}; writing there would replace "
            "the base being updated.",
            hint="choose a new folder for --out",
        )
    reason = unwritable_reason(out_dir, model_store_entry=model_store_entry)
    if reason is not None:
        raise ConfigError(
            f"{out_dir}: `--out` can't be written: {reason}.", hint="pass a folder you can write to"
        )


def simulate_update(
    base_dir: str | Path,
    corpus: Sequence[str | os.PathLike[str]],
    out_dir: str | Path,
    *,
    steps: int = 50,
    seq_len: int = 256,
    batch_size: int = 4,
    learning_rate: float = 2e-5,
    seed: int = 0,
    force: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
    model_store_entry: bool = False,
) -> UpdateResult:
    """Continue pretraining all parameters of ``base_dir`` on ``corpus``; save the updated base.

    Args:
        base_dir: a local model folder (fp32/bf16 safetensors).
        corpus: plain-text files or folders.
        out_dir: the new model folder (written atomically; refused if it exists unless ``force``).
        steps: optimizer steps (each ``batch_size × seq_len`` tokens).
        seq_len: tokens per block.
        batch_size: blocks per step.
        learning_rate: AdamW learning rate (constant after a 10 % linear warm-up).
        seed: shuffling seed.
        force: replace an existing ``out_dir``.
        progress: called after each step with (step, total, loss).
        model_store_entry: ``out_dir`` is ``models/NAME`` of the model store, written on the
            store's behalf (the demo's v2); any other destination in the store is refused.

    Returns:
        An :class:`UpdateResult`; the same data is saved as ``out_dir/portllm_update.json``.

    Raises:
        DataError: the corpus is missing or too short for one batch.
        TrainingError: the loss became NaN/Inf.
        FileExistsError: ``out_dir`` exists and ``force`` is false.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from portllm_edge.training.batches import chunk_text

    check_update_args(
        base_dir, out_dir, steps=steps, seq_len=seq_len, batch_size=batch_size, learning_rate=learning_rate,
        model_store_entry=model_store_entry,
    )  # fmt: skip
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(str(out_dir))
    base_dir = Path(base_dir)
    tok = AutoTokenizer.from_pretrained(base_dir)
    blocks = chunk_text(tok, read_corpus(corpus), seq_len, max_blocks=steps * batch_size * 4 + 32)
    if len(blocks) < batch_size + 1:
        raise DataError(
            f"corpus has {len(blocks)} blocks of {seq_len} tokens; need at least {batch_size + 1}.",
            hint="pass more text, or lower --seq-len",
        )
    rng = random.Random(seed)
    rng.shuffle(blocks)
    n_held = min(16, max(1, len(blocks) // 10))
    held, train = blocks[:n_held], blocks[n_held:]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)  # type: ignore[arg-type]
    old_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    ppl_before = _perplexity(model, held, device)
    losses, seconds = _pretrain(model, train, steps, batch_size, learning_rate, device, progress)
    ppl_after = _perplexity(model, held, device)
    drift = relative_drift(old_state, model)
    linear = [v for k, v in drift.items() if k.endswith("proj")]
    result = UpdateResult(
        out_dir=out_dir,
        steps=steps,
        seconds=seconds,
        losses=losses,
        perplexity_before=ppl_before,
        perplexity_after=ppl_after,
        drift=drift,
        mean_linear_drift=sum(linear) / len(linear) if linear else 0.0,
    )
    del old_state
    model.eval()
    with atomic_dir(out_dir, overwrite=force) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        record = result.to_dict()
        record.update(
            {
                "base": str(base_dir),
                "corpus": [str(c) for c in corpus],
                "seq_len": seq_len,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "seed": seed,
            }
        )
        (tmp / DRIFT_FILE).write_text(json.dumps(record, indent=2))
    return result


@dataclass(frozen=True)
class UpdateStage:
    """One update of a chain: continued pretraining of the previous version.

    Attributes:
        steps: Optimizer steps.
        learning_rate: AdamW learning rate.
    """

    steps: int
    learning_rate: float


@dataclass(frozen=True)
class LineageVersion:
    """One version of a base lineage (v1 is the root, not trained here).

    Attributes:
        version: ``"v1"``, ``"v2"``, ...
        path: The model folder.
        steps: Steps that made it from the previous version (``None`` for the root).
        learning_rate: Their learning rate (``None`` for the root).
        mean_linear_drift: Mean relative drift of the linear modules from the previous
            version (``None`` for the root).
    """

    version: str
    path: str
    steps: int | None = None
    learning_rate: float | None = None
    mean_linear_drift: float | None = None


UpdateFn = Callable[[Path, Path, UpdateStage, int], UpdateResult]
"""``(previous version, out folder, stage, seed) -> UpdateResult``: makes one version of a chain."""


def _chain_key(
    prev: Path,
    stage: UpdateStage,
    seq_len: int,
    batch_size: int,
    seed: int,
    corpus: Sequence[Any],
    parent: str,
) -> str:
    """A version's identity: its previous version (folder and ``parent``, that version's own key, so
    a retrained version invalidates every later one), its stage, sizes, seed and corpus."""
    import hashlib

    parts = [
        parent,
        str(prev.resolve()),
        stage.steps,
        stage.learning_rate,
        seq_len,
        batch_size,
        seed,
        [str(c) for c in corpus],
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def simulate_update_chain(
    base_dir: str | Path,
    corpus: Sequence[str | os.PathLike[str]],
    out_root: str | Path,
    stages: Sequence[UpdateStage],
    *,
    seq_len: int = 256,
    batch_size: int = 4,
    seed: int = 0,
    force: bool = False,
    reuse: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
    update_fn: UpdateFn | None = None,
) -> list[LineageVersion]:
    """Chain updates v1 -> v2 -> ... -> vK: each version is continued pretraining of the previous one.

    ``base_dir`` is v1; stage ``i`` (0-based) trains version ``v{i+1}`` into
    ``out_root/v{i+2}`` with :func:`simulate_update` (seed ``seed + i``). Each version's
    ``portllm_update.json`` gains ``version``, ``chain_key`` and ``lineage``: the versions
    from the root to itself (:class:`LineageVersion` records), so a later port can say
    which update of which lineage it targets (:func:`read_lineage`). Increasing
    ``steps``/``learning_rate`` along the stages gives increasing drift (the
    successive-update benchmark of issue 13).

    Args:
        base_dir: The root base folder (v1).
        corpus: Plain-text files or folders, shared by every stage.
        out_root: Folder receiving ``v2`` ... ``vK``.
        stages: One :class:`UpdateStage` per new version (at least one).
        seq_len, batch_size, force, progress: As :func:`simulate_update`.
        seed: Seed of the first stage; stage ``i`` uses ``seed + i``.
        reuse: Keep a version whose ``chain_key`` (previous version and its key, stage, sizes,
            seed, corpus) matches instead of training it again (a resumed chain); a remade
            version remakes every later one.
        update_fn: Makes one version (default: :func:`simulate_update`); the workflow layer
            passes one that records each update in the run history.

    Returns:
        The lineage, v1 first.

    Raises:
        ConfigError: No stages, a stage's settings are refused by :func:`check_update_args`, or
            ``out_root/vN`` holds a folder the chain would not reuse and ``force`` is false.
        DataError, TrainingError, FileExistsError: As :func:`simulate_update`.
    """
    from portllm_edge.fsutil import atomic_write_json

    if not stages:
        raise ConfigError(
            "an update chain needs at least one stage", hint="pass --chain STEPS:LR[,STEPS:LR...]"
        )
    out_root = Path(out_root)
    lineage = [LineageVersion("v1", str(Path(base_dir).resolve()))]
    for i, stage in enumerate(stages):
        check_update_args(
            base_dir,
            out_root / f"v{i + 2}",
            steps=stage.steps,
            seq_len=seq_len,
            batch_size=batch_size,
            learning_rate=stage.learning_rate,
            chain_item=f"{stage.steps}:{stage.learning_rate:g}",
        )

    def default_update(prev: Path, out: Path, stage: UpdateStage, stage_seed: int) -> UpdateResult:
        return simulate_update(
            prev, corpus, out, steps=stage.steps, seq_len=seq_len, batch_size=batch_size,
            learning_rate=stage.learning_rate, seed=stage_seed, force=force, progress=progress,
        )  # fmt: skip

    make = update_fn or default_update
    keys, parent = [], ""
    for i, stage in enumerate(stages):
        prev = Path(base_dir) if i == 0 else out_root / f"v{i + 1}"
        parent = _chain_key(prev, stage, seq_len, batch_size, seed + i, corpus, parent)
        keys.append(parent)
    for i, key in enumerate(keys):
        _check_version_folder(out_root / f"v{i + 2}", key, force=force, reuse=reuse)
    prev = Path(base_dir)
    for i, stage in enumerate(stages):
        out = out_root / f"v{i + 2}"
        key = keys[i]
        meta = out / DRIFT_FILE
        if reuse and _chain_stamp(out).get("chain_key") == key:
            drift = json.loads(meta.read_text()).get("mean_linear_drift")
        else:
            drift = make(prev, out, stage, seed + i).mean_linear_drift
        lineage.append(
            LineageVersion(f"v{i + 2}", str(out.resolve()), stage.steps, stage.learning_rate, drift)
        )
        record = json.loads(meta.read_text())
        record.update({"version": f"v{i + 2}", "chain_key": key, "lineage": [asdict(v) for v in lineage]})
        atomic_write_json(meta, record)
        prev = out
    return lineage


def _chain_stamp(version_dir: Path) -> dict[str, Any]:
    """The ``portllm_update.json`` of a chain version, or ``{}`` when ``version_dir`` is not one."""
    try:
        record = json.loads((version_dir / DRIFT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and "chain_key" in record else {}


def _check_version_folder(version_dir: Path, key: str, *, force: bool, reuse: bool) -> None:
    """Refuse, before any training, to replace a folder at ``--out/vN`` that the chain would not reuse.

    Kept (reused): a chain version stamped with this stage's ``key``. Anything else (a version
    made with other settings or from another previous version, a version cut short before its
    stamp, another model) is replaced only with ``force``.

    Raises:
        ConfigError: ``version_dir`` exists, would not be reused, and ``force`` is false.
    """
    if force or not version_dir.exists() or (reuse and _chain_stamp(version_dir).get("chain_key") == key):
        return
    what = (
        "a version made with other settings" if _chain_stamp(version_dir) else "not a version of this chain"
    )
    raise ConfigError(
        f"{version_dir}: already exists ({what}); the chain would replace it.",
        hint="pass --force to replace it (and the versions after it), or choose another --out",
    )


def read_lineage(base_dir: str | Path) -> tuple[str, list[LineageVersion]] | None:
    """The version name and lineage stamped into ``base_dir`` by :func:`simulate_update_chain`, or ``None``.

    Returns:
        ``(version, lineage)`` with ``lineage[0]`` the root (v1); ``None`` for a base that is
        not a version of a chain (no ``portllm_update.json``, or one without ``lineage``).
    """
    meta = Path(base_dir) / DRIFT_FILE
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
        return str(record["version"]), [LineageVersion(**v) for v in record["lineage"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
