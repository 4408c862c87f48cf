"""The serving check: can vLLM or llama.cpp serve this patch as an adapter, and if not, why and what to do.

Why this module exists: serving runtimes accept only plain LoRA factors and
fail in unhelpful ways on anything else. llama.cpp's converter exits on full
``lm_head``/``embed_tokens`` tensors and DoRA magnitudes (llama.cpp #11554); vLLM
refuses ``modules_to_save`` and DoRA (``PEFTHelper._validate_features`` in vLLM's
``lora/peft_helper.py``, vLLM #9280) and serves the bare base without a word when
no adapter module matches a base module (vLLM #55193). This check reads only
headers and configs, names every blocker per runtime with its fix, and runs
before an export writes anything.

It must not read weights or import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from portllm_edge.patches.adapter_format import (
    AdapterConfig,
    AdapterLayout,
    read_adapter_layout,
    resolve_module,
)
from portllm_edge.porting.adapter_io import BaseIndex

Runtime = Literal["peft", "vllm", "llama.cpp"]
RUNTIMES: tuple[Runtime, ...] = ("peft", "vllm", "llama.cpp")
FORMAT_RUNTIME: dict[str, Runtime] = {"peft": "peft", "vllm": "vllm", "gguf-lora": "llama.cpp"}
"""Export format -> the runtime that serves it."""

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``--max-lora-rank`` (``LoRAConfig.max_lora_rank``)."""


@dataclass(frozen=True)
class Blocker:
    """One reason a runtime cannot serve the patch as an adapter.

    Attributes:
        runtime: ``"vllm"``, ``"llama.cpp"`` or ``"peft"``.
        problem: What in the patch blocks serving (names the field or tensor).
        fix: What to do instead (a command where one exists).
    """

    runtime: Runtime
    problem: str
    fix: str


@dataclass
class ServingReport:
    """Per-runtime blockers and notes for one patch (and, when known, one base).

    Attributes:
        adapter_dir: The patch folder checked.
        base_dir: The base checked against, or ``None`` (module matching then unchecked).
        blockers: Every :class:`Blocker`, all runtimes.
        notes: Rewrites an export applies that keep outputs equal (e.g. ``alpha_pattern`` folded into ``lora_B``).
        max_rank: The largest LoRA rank stored in the patch.
        matched_modules: LoRA modules that map onto base modules (``None`` without a base).
        lora_modules: LoRA modules in the patch.
    """

    adapter_dir: Path
    base_dir: Path | None
    blockers: list[Blocker] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    max_rank: int = 0
    matched_modules: int | None = None
    lora_modules: int = 0

    def block(self, runtimes: tuple[Runtime, ...], problem: str, fix: str) -> None:
        """Add one :class:`Blocker` with this ``problem`` and ``fix`` for each of ``runtimes``."""
        self.blockers.extend(Blocker(rt, problem, fix) for rt in runtimes)

    def blocking(self, runtime: Runtime) -> list[Blocker]:
        """The blockers of one runtime."""
        return [b for b in self.blockers if b.runtime == runtime]

    def ok(self, runtime: Runtime) -> bool:
        """True when nothing blocks ``runtime``."""
        return not self.blocking(runtime)

    def lines(self) -> list[str]:
        """The report as text, one runtime per block."""
        out = [f"serving check: {self.adapter_dir}" + (f" on {self.base_dir}" if self.base_dir else "")]
        for rt in RUNTIMES:
            bl = self.blocking(rt)
            out.append(f"  {rt:<10} {'ok' if not bl else 'BLOCKED'}")
            for b in bl:
                out.append(f"             - {b.problem}")
                out.append(f"               fix: {b.fix}")
        out.extend(f"  note: {n}" for n in self.notes)
        return out


def vllm_max_lora_rank(rank: int) -> int | None:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds ``rank`` (``None`` above 512)."""
    return next((r for r in VLLM_LORA_RANKS if r >= rank), None)


def _merge_fix(what: str) -> str:
    return (
        f"{what}; merge instead: `portllm-edge port PATCH --base BASE --merge-to merged.gguf` "
        "(or `portllm-edge merge PATCH --base BASE --out DIR`) and serve the merged model"
    )


def check_serving(
    adapter_dir: Path,
    base: BaseIndex | None = None,
) -> ServingReport:
    """Check a LoRA patch against vLLM's and llama.cpp's adapter loaders (headers and configs only).

    Args:
        adapter_dir: A peft LoRA folder.
        base: The base it will be served on (its header index), or ``None``. Without
            a base, module matching and llama.cpp's architecture are not checked and
            llama.cpp is reported blocked (its adapter file needs the base's layout).

    Returns:
        A :class:`ServingReport`.

    Raises:
        PatchError: the folder, its config or its header cannot be read.
    """
    adapter_dir = Path(adapter_dir)
    config = AdapterConfig.read(adapter_dir, refuse_unknown=False).known
    layout = read_adapter_layout(adapter_dir)
    rep = ServingReport(adapter_dir, base.model_dir if base is not None else None)
    rep.lora_modules = len(layout.lora)
    rep.max_rank = max((lm.rank for lm in layout.lora.values()), default=0)
    _check_features(rep, config, layout)
    if vllm_max_lora_rank(rep.max_rank) is None:
        rep.block(
            ("vllm",),
            f"LoRA rank {rep.max_rank} is above vLLM's largest --max-lora-rank (512)",
            _merge_fix("vLLM cannot hold this rank"),
        )
    patterns = [k for k in ("rank_pattern", "alpha_pattern") if config.get(k)]
    if patterns or config.get("use_rslora"):
        what = ", ".join(f"`{p}`" for p in patterns) + (" `use_rslora`" if config.get("use_rslora") else "")
        rep.notes.append(
            f"{what.strip()}: vLLM and llama.cpp use one scale per adapter (lora_alpha/r); each module's scale "
            "is folded into its lora_B so outputs stay equal"
        )

    if base is None:
        rep.block(
            ("llama.cpp",),
            "no base model given: a llama.cpp adapter needs the base's architecture and tensor layout",
            "pass --base (the model the patch was ported to)",
        )
        return rep
    _check_modules(rep, layout, base)
    return rep


_SERVING: tuple[Runtime, ...] = ("vllm", "llama.cpp")
"""The runtimes that serve an adapter file (peft loads anything peft wrote)."""


def _check_features(rep: ServingReport, config: dict[str, Any], layout: AdapterLayout) -> None:
    """Blockers from what the patch is: its type, DoRA, full saved tensors, bias, other non-LoRA features."""
    peft_type = str(config.get("peft_type") or "LORA").upper()
    if peft_type != "LORA":
        rep.block(RUNTIMES, f"`peft_type` is {peft_type}, not LORA", "export LoRA patches only")
    if not layout.lora:
        rep.block(RUNTIMES, f"{layout.path.name} holds no lora_A/lora_B pair", "re-save the patch with peft")
    if config.get("use_dora") or layout.dora:
        rep.block(
            _SERVING,
            f"DoRA (`use_dora: true`, magnitude vectors on {len(layout.dora)} modules): vLLM refuses DoRA "
            "and llama.cpp's adapter loader has no magnitude vectors",
            "serve it with peft/transformers (--format peft), or retrain as plain LoRA (`use_dora: false`)",
        )
    saved = sorted(layout.saved)
    if saved or config.get("modules_to_save"):
        names = ", ".join(f"`{n}`" for n in saved[:3]) or ", ".join(config.get("modules_to_save") or [])
        full_rows = [n for n in saved if n.endswith(("lm_head.weight", "embed_tokens.weight"))]
        what = (
            f"carries full {'lm_head/embed_tokens rows' if full_rows else 'tensors'} ({names}; "
            "`modules_to_save`): vLLM and llama.cpp serve LoRA factors only and cannot serve it"
        )
        rep.block(_SERVING, what, _merge_fix("the full tensors only exist in a merged model"))
    if (
        config.get("lora_bias")
        or any(lm.bias_key for lm in layout.lora.values())
        or (config.get("bias") not in (None, "none"))
    ):
        rep.block(
            _SERVING,
            f"LoRA bias (`lora_bias`/`bias: {config.get('bias')}`): vLLM and llama.cpp's adapters have no bias term",
            _merge_fix("a bias can only be folded into a merged model"),
        )
    for key in ("layer_replication", "target_parameters", "trainable_token_indices"):
        if config.get(key):
            rep.block(_SERVING, f"`{key}` is set: not a plain LoRA", _merge_fix("it cannot be an adapter"))
    if layout.unknown:
        rep.block(
            RUNTIMES,
            f"unrecognized adapter tensor `{layout.unknown[0]}` ({len(layout.unknown)} in all)",
            "run `portllm-edge check PATCH --base BASE`; re-save the patch with peft",
        )
    if layout.incomplete:
        rep.block(
            RUNTIMES,
            f"module `{layout.incomplete[0]}` has lora_A without lora_B (or the reverse)",
            "re-save the patch with peft",
        )
    emb = [m for m, lm in layout.lora.items() if lm.kind == "embedding"]
    if emb:
        rep.block(
            ("llama.cpp",),
            f"LoRA on embeddings (`{emb[0]}`): portllm-edge does not write token_embd LoRA to GGUF",
            _merge_fix("export it with --format vllm/peft"),
        )


def _check_modules(rep: ServingReport, layout: AdapterLayout, base: BaseIndex) -> None:
    """Blockers from the base: unmatched modules, shape mismatches, llama.cpp names and tied heads."""
    from portllm_edge.errors import PortingError
    from portllm_edge.export.gguf_layout import GgufNames

    modules = base.modules
    unmatched = []
    matched = 0
    for module, lm in layout.lora.items():
        target, _ = resolve_module(module, modules)
        if target is None:
            unmatched.append(module)
            continue
        matched += 1
        want = lm.weight_shape(base.config.get("model_type"), target)
        if tuple(modules[target]) != tuple(want):
            rep.block(
                ("vllm", "llama.cpp", "peft"),
                f"ΔW of `{module}` is {list(want)} but base `{target}.weight` is {list(modules[target])}",
                "port the patch onto a base of the same size (`portllm-edge check PATCH --base BASE`)",
            )
    rep.matched_modules = matched
    if layout.lora and matched == 0:
        rep.block(
            ("vllm", "llama.cpp", "peft"),
            f"none of the patch's {len(layout.lora)} LoRA modules (e.g. `{next(iter(layout.lora))}`) exists in "
            f"{base.model_dir}: vLLM would serve the bare base without a word (vLLM #55193), llama.cpp refuses it",
            "serve it on the base it was trained or ported on (`portllm-edge patch show NAME`), or port it first",
        )
    elif unmatched:
        rep.block(
            ("vllm", "llama.cpp", "peft"),
            f"{len(unmatched)} of {len(layout.lora)} LoRA modules have no counterpart in {base.model_dir} "
            f"(e.g. `{unmatched[0]}`)",
            "run `portllm-edge check PATCH --base BASE` to see which target modules are missing",
        )
    try:
        names = GgufNames(base.config, str(base.model_dir / "config.json"))
    except PortingError as exc:
        rep.block(("llama.cpp",), exc.message, exc.hint or "")
        return
    for module in layout.lora:
        target, _ = resolve_module(module, modules)
        if target is None:
            continue
        if names.tensor_name(f"{target}.weight") is None:
            rep.block(
                ("llama.cpp",),
                f"module `{target}` has no llama.cpp tensor name for architecture {names.arch.name}",
                "export with --format peft, or merge instead",
            )
            break
        if target.endswith("lm_head") and base.tied and "lm_head.weight" not in base.tensors:
            rep.block(
                ("llama.cpp",),
                "LoRA on `lm_head` of a base with tied embeddings: llama.cpp's model has no separate output tensor",
                _merge_fix("the untied head only exists in a merged model"),
            )


__all__ = [
    "FORMAT_RUNTIME",
    "RUNTIMES",
    "VLLM_LORA_RANKS",
    "Blocker",
    "Runtime",
    "ServingReport",
    "check_serving",
    "vllm_max_lora_rank",
]
