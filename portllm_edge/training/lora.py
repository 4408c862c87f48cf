"""LoRA / QLoRA fine-tuning with peft: the initial patch on the old base, and the baseline on the new one.

A plain AdamW loop over the LoRA parameters (Hu et al., "LoRA", 2021; peft's
``LoraConfig``), loss on completion tokens only. QLoRA (Dettmers et al., 2023)
loads the base in NF4 and runs peft's ``prepare_model_for_kbit_training`` first.
The result is a peft adapter folder: ``adapter_config.json`` + ``adapter_model.safetensors``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.errors import ConfigError, TrainingError

DEFAULT_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

ProgressFn = Callable[[int, int, float], None]
"""progress(step, total_steps, loss)"""


@dataclass(frozen=True)
class LoraHyperparams:
    """LoRA hyperparameters (peft ``LoraConfig`` names) and the optimizer schedule.

    Attributes:
        r: LoRA rank ``r``.
        lora_alpha: scaling numerator; ΔW = (lora_alpha / r)·B·A.
        target_modules: module names to adapt.
        lora_dropout: dropout on the LoRA input.
        epochs: passes over the data (ignored when ``max_steps`` is set).
        max_steps: stop after this many optimizer steps.
        learning_rate: AdamW learning rate (linear warm-up for 5 % of steps, then constant).
        batch_size: examples per step.
        max_length: tokens per example (prompt cut from the left).
        seed: RNG seed (initialization and shuffling).
        weight_decay: AdamW weight decay.
    """

    r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    lora_dropout: float = 0.05
    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_length: int = 256
    seed: int = 0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(
                f"`r` must be a positive integer, got {self.r}.", hint="typical values: 4, 8, 16"
            )
        if self.lora_alpha <= 0:
            raise ConfigError(f"`lora_alpha` must be positive, got {self.lora_alpha}.", hint="use 2 × r")
        if not self.target_modules:
            raise ConfigError("`target_modules` is empty.", hint="e.g. q_proj,k_proj,v_proj,o_proj")
        if self.learning_rate <= 0 or not math.isfinite(self.learning_rate):
            raise ConfigError(
                f"`learning_rate` must be a positive number, got {self.learning_rate}.",
                hint="typical LoRA values: 1e-4 to 5e-4",
            )
        if self.batch_size <= 0 or self.max_length <= 1:
            raise ConfigError("`batch_size` and `max_length` must be positive.", hint="e.g. --batch-size 8")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(
                f"`max_steps` must be at least 1, got {self.max_steps}.",
                hint="pass --max-steps 1 or more, or drop it to train for --epochs",
            )
        if self.epochs <= 0 and not self.max_steps:
            raise ConfigError("`epochs` must be positive.", hint="e.g. --epochs 1")


@dataclass
class TrainResult:
    """A finished LoRA run.

    Attributes:
        adapter_dir: the saved peft adapter folder.
        steps: optimizer steps taken.
        losses: training loss per step.
        seconds: wall time of the training loop, seconds.
        tokens: tokens processed (non-padding).
        trainable_parameters: LoRA parameters trained.
    """

    adapter_dir: Path
    steps: int
    losses: list[float]
    seconds: float
    tokens: int
    trainable_parameters: int
    hyperparams: dict[str, Any] = field(default_factory=dict)


def make_lora_model(model: Any, hp: LoraHyperparams, *, quantized: bool = False) -> Any:
    """Wrap ``model`` with fresh LoRA layers (peft ``get_peft_model``); QLoRA preparation when ``quantized``.

    Raises:
        ConfigError: a target module does not exist in the model.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in hp.target_modules if t not in names]
    if missing:
        raise ConfigError(
            f"`target_modules`: {', '.join(missing)} not found in the base model.",
            hint=f"choose among the model's linear layers, e.g. {', '.join(sorted(n for n in names if n.endswith('proj'))[:8])}",
        )
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    cfg = LoraConfig(
        r=hp.r,
        lora_alpha=hp.lora_alpha,
        target_modules=list(hp.target_modules),
        lora_dropout=hp.lora_dropout,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def train_lora(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    hp: LoraHyperparams,
    out_dir: str | Path,
    *,
    quantized: bool = False,
    progress: ProgressFn | None = None,
    base_model_name_or_path: str | None = None,
) -> TrainResult:
    """Fine-tune a fresh LoRA patch on (prompt, completion) pairs and save it.

    Args:
        model: a loaded causal LM (fp32/bf16, or NF4 with ``quantized=True`` for QLoRA).
        tokenizer: its tokenizer (pad token set).
        pairs: training examples; the loss covers the completion (plus eos) only.
        hp: hyperparameters.
        out_dir: where the peft adapter folder is written.
        quantized: the base is bitsandbytes-quantized (QLoRA).
        progress: called after every step with (step, total, loss).
        base_model_name_or_path: written into ``adapter_config.json``.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TrainingError: no examples, or the loss became NaN/Inf.
    """
    import torch

    from portllm_edge.training.batches import collate, encode_pairs, epoch_batches

    if not pairs:
        raise TrainingError("no training examples.", hint="check --data and the task's file format")
    torch.manual_seed(hp.seed)
    peft_model = make_lora_model(model, hp, quantized=quantized)
    peft_model.train()
    encoded = encode_pairs(tokenizer, pairs, hp.max_length)
    steps_per_epoch = math.ceil(len(encoded) / hp.batch_size)
    total = hp.max_steps or max(1, math.ceil(steps_per_epoch * hp.epochs))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    device = next(peft_model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: list[float] = []
    tokens = 0
    step = 0
    epoch = 0
    start = time.perf_counter()
    while step < total:
        for idx in epoch_batches(len(encoded), hp.batch_size, hp.seed + epoch):
            batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], pad).items()}
            out = peft_model(**batch, use_cache=False)
            loss = out.loss
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the training loss became {float(loss)} at step {step + 1}.",
                    hint="lower --lr, or check the data for empty completions",
                )
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens += int(batch["attention_mask"].sum())
            value = loss.item()
            losses.append(value)
            if progress is not None:
                progress(step, total, value)
            if step >= total:
                break
        epoch += 1
    seconds = time.perf_counter() - start
    peft_model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out_dir)
    if base_model_name_or_path is not None:
        import json

        cfg_path = out_dir / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base_model_name_or_path
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return TrainResult(
        adapter_dir=out_dir,
        steps=step,
        losses=losses,
        seconds=seconds,
        tokens=tokens,
        trainable_parameters=sum(p.numel() for p in params),
        hyperparams={
            "r": hp.r,
            "lora_alpha": hp.lora_alpha,
            "target_modules": list(hp.target_modules),
            "lora_dropout": hp.lora_dropout,
            "learning_rate": hp.learning_rate,
            "batch_size": hp.batch_size,
            "max_length": hp.max_length,
            "steps": step,
            "seed": hp.seed,
            "quantized": quantized,
        },
    )
