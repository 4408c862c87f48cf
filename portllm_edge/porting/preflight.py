"""Compatibility preflight: does a patch fit a (new) base model, and if not, exactly why?

Why this module exists: loading a 7B base to find out that a patch does not fit
costs minutes and gigabytes, and peft's own failures are a wall of "missing keys"
warnings, a size-mismatch traceback, or a patch that silently did nothing. The
preflight answers before any weight is loaded, from ``config.json``, the tokenizer
files, ``adapter_config.json`` and the base's safetensors *headers* only. Every check yields a
:class:`CheckResult` (pass / warn / fail, a one-line reason, details and a fix);
``port`` refuses to continue on a fail unless forced.

The one tensor read is the patch's own small file, scanned for NaN/Inf as raw
bits (check ``finite``, no torch).

What it must not do: read base tensor data, import torch or peft (``check`` must
start in about a second), or print. The CLI formats the report.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from portllm_edge.errors import BaseModelError, CompatibilityError
from portllm_edge.hfconfig import model_types, same_model_family, text_config
from portllm_edge.patches.adapter_format import (
    AdapterConfig,
    AdapterLayout,
    peft_selects,
    read_adapter_layout,
    resolve_module,
)
from portllm_edge.porting.adapter_io import BaseIndex, read_base_index, read_json
from portllm_edge.porting.tensor_plan import TensorPlan, read_tensor_plan
from portllm_edge.porting.vocab import (
    compare_vocabs,
    read_vocab,
)

Status = Literal["pass", "warn", "fail"]

MIN_SHARED_VOCAB = 0.5
"""Below this fraction of the old vocabulary found in the new one, the tokenizers are
different families (the patch was learned on another tokenization): fail."""

MAX_LISTED = 10

CHECK_NAMES = (
    "architecture",
    "hidden_size",
    "target_modules",
    "rank",
    "modules_to_save",
    "tied_embeddings",
    "adapter_keys",
    "finite",
    "adapter_config",
    "additive",
    "tokenizer",
)
"""Every check, in the order the report lists them."""

_CONFIG_FIELDS_OF_INTEREST = (
    "rope_parameters",
    "rope_scaling",
    "rope_theta",
    "vocab_size",
    "max_position_embeddings",
    "sliding_window",
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "num_key_value_heads",
    "num_attention_heads",
    "intermediate_size",
    "num_hidden_layers",
    "tie_word_embeddings",
)


@dataclass(frozen=True)
class CheckResult:
    """One preflight check's outcome.

    Attributes:
        name: One of :data:`CHECK_NAMES`.
        status: ``"pass"``, ``"warn"`` (portable, but read this) or ``"fail"`` (will not port).
        reason: One line naming the tensor/field at fault.
        details: JSON-ready facts behind the verdict.
        hint: How to fix a fail or a warn, or ``None``.
    """

    name: str
    status: Status
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "details": self.details,
            "hint": self.hint,
        }


@dataclass
class PreflightReport:
    """All checks of a patch against a base.

    Attributes:
        adapter_dir / base_dir / old_base_dir: The inputs.
        checks: In :data:`CHECK_NAMES` order.
        needs_rewrite: True when the patch must be rewritten (keys renamed, rows
            carried, config keys dropped) by :func:`portllm_edge.porting.vocab.port_adapter`
            before peft can attach it to the base.
    """

    adapter_dir: Path
    base_dir: Path
    old_base_dir: Path | None
    checks: list[CheckResult]
    needs_rewrite: bool = False

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        """The failed checks."""
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[CheckResult]:
        """The checks that warned."""
        return [c for c in self.checks if c.status == "warn"]

    def get(self, name: str) -> CheckResult:
        """The check called ``name``.

        Raises:
            KeyError: no such check.
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``check --json`` prints)."""
        return {
            "adapter": str(self.adapter_dir),
            "base": str(self.base_dir),
            "old_base": None if self.old_base_dir is None else str(self.old_base_dir),
            "ok": self.ok,
            "needs_rewrite": self.needs_rewrite,
            "counts": {s: sum(c.status == s for c in self.checks) for s in ("pass", "warn", "fail")},
            "checks": [c.to_dict() for c in self.checks],
        }

    def raise_on_failure(self) -> None:
        """Raise a :class:`CompatibilityError` for the first failed check (for ``port`` without ``--force``).

        Raises:
            CompatibilityError: naming the check, its reason and fix.
        """
        if self.ok:
            return
        first = self.failures[0]
        more = f" (and {len(self.failures) - 1} more failed checks)" if len(self.failures) > 1 else ""
        raise CompatibilityError(
            f"preflight check `{first.name}` failed: {first.reason}{more}",
            hint=(first.hint or "run `portllm-edge check` for the full report")
            + "; or pass --force to port anyway",
        )


# --------------------------------------------------------------------------- context


@dataclass
class _Ctx:
    adapter_dir: Path
    base_dir: Path
    old_base_dir: Path | None
    config: AdapterConfig
    layout: AdapterLayout
    base: BaseIndex
    old_config: dict[str, Any] | None
    old_config_source: str | None
    plan: TensorPlan
    resolved: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


def _old_config(
    adapter_config: AdapterConfig, old_base_dir: Path | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The ``config.json`` of the base the patch was trained on, and the file it came from.

    From ``old_base_dir`` when given, else from the adapter config's ``base_model_name_or_path``
    when that names a local folder; ``(None, None)`` when neither is readable here.

    Raises:
        BaseModelError: ``old_base_dir`` is given but its ``config.json`` can't be read.
    """
    if old_base_dir is not None:
        path = Path(old_base_dir) / "config.json"
        return read_json(path), str(path)
    ref = adapter_config.base_model_name_or_path
    if isinstance(ref, str) and ref:
        with contextlib.suppress(OSError, ValueError):
            path = Path(ref) / "config.json"
            if path.is_file():
                with contextlib.suppress(Exception):
                    return read_json(path), str(path)
    return None, None


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _shape(s: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(x) for x in s) + "]"


# --------------------------------------------------------------------------- checks


def check_architecture(ctx: _Ctx) -> CheckResult:
    """The patch's base and the new base share a model type (``config.json`` ``model_type``)."""
    new_types = model_types(ctx.base.config)
    details: dict[str, Any] = {"base_model_type": sorted(new_types)}
    if not new_types:
        return CheckResult(
            "architecture",
            "warn",
            f"{ctx.base_dir / 'config.json'} has no `model_type`",
            details,
            hint="add the model_type to config.json",
        )
    if ctx.old_config is not None:
        old_types = model_types(ctx.old_config)
        details.update({"patch_model_type": sorted(old_types), "source": ctx.old_config_source})
        old_t, new_t = text_config(ctx.old_config), text_config(ctx.base.config)
        changed = {
            k: {"old": old_t.get(k), "new": new_t.get(k)}
            for k in _CONFIG_FIELDS_OF_INTEREST
            if old_t.get(k) != new_t.get(k)
        }
        details["config_changes"] = changed
        if not same_model_family(ctx.old_config, ctx.base.config):
            return CheckResult(
                "architecture",
                "fail",
                f"the patch was trained on a `{'/'.join(sorted(old_types))}` model ({ctx.old_config_source}) "
                f"but the base is `{'/'.join(sorted(new_types))}` (field `model_type`)",
                details,
                hint="port onto a newer version of the same model family",
            )
        note = f"; changed: {', '.join(changed)}" if changed else ""
        return CheckResult("architecture", "pass", f"`{'/'.join(sorted(new_types))}` on both{note}", details)
    ref = ctx.config.base_model_name_or_path or ""
    details["patch_base_ref"] = ref
    if ref and any(_norm(t) in _norm(ref) for t in new_types):
        return CheckResult(
            "architecture",
            "pass",
            f"patch base `{ref}` names the base's model type `{'/'.join(sorted(new_types))}` (config not available)",
            details,
        )
    return CheckResult(
        "architecture",
        "warn",
        f"cannot verify: the patch's base `{ref or '?'}` is not a local folder and its name does not mention "
        f"`{'/'.join(sorted(new_types))}`",
        details,
        hint="pass --old OLD_BASE_FOLDER so the model types can be compared",
    )


_HIDDEN_INPUT = re.compile(r"(q_proj|k_proj|v_proj|gate_proj|up_proj|qkv_proj|gate_up_proj)$")


def check_hidden_size(ctx: _Ctx) -> CheckResult:
    """The patch's hidden size (old config, or lora_A's in-features) equals the base's ``hidden_size``."""
    new_h = text_config(ctx.base.config).get("hidden_size")
    details: dict[str, Any] = {"base_hidden_size": new_h}
    if not isinstance(new_h, int):
        return CheckResult(
            "hidden_size", "warn", f"{ctx.base_dir / 'config.json'} has no integer `hidden_size`", details
        )
    if ctx.old_config is not None and isinstance(text_config(ctx.old_config).get("hidden_size"), int):
        old_h, source = (
            int(text_config(ctx.old_config)["hidden_size"]),
            f"`hidden_size` in {ctx.old_config_source}",
        )
    else:
        widths = {
            lm.a_shape[1]: lm.a_key  # lora_A is [r, in_features] for Linear and Conv1D alike
            for m, lm in ctx.layout.lora.items()
            if lm.kind == "linear" and _HIDDEN_INPUT.search(m)
        }
        widths.update(
            {
                st.shape[1]: st.key
                for name, st in ctx.layout.saved.items()
                if name.endswith("embed_tokens.weight") and len(st.shape) == 2
            }
        )
        if not widths:
            return CheckResult(
                "hidden_size",
                "pass",
                f"base hidden size {new_h}; the patch has no tensor that reveals its own",
                details,
            )
        if len(widths) > 1:
            return CheckResult(
                "hidden_size",
                "fail",
                f"the patch's tensors disagree on the hidden size: {sorted(widths)}",
                details,
                hint="the adapter file is inconsistent; re-export it",
            )
        old_h = next(iter(widths))
        source = f"in-features of `{widths[old_h]}`"
    details.update({"patch_hidden_size": old_h, "source": source})
    if old_h != new_h:
        return CheckResult(
            "hidden_size",
            "fail",
            f"the patch's hidden size is {old_h} ({source}) but the base's `hidden_size` is {new_h}",
            details,
            hint="a patch only ports between versions of the same model size; pick the matching base",
        )
    return CheckResult("hidden_size", "pass", f"hidden size {new_h} on both", details)


def check_target_modules(ctx: _Ctx) -> CheckResult:
    """Every LoRA module maps onto a base weight with matching ``[out_features, in_features]`` (the tensor plan)."""
    quant = ctx.base.quantized_storage()
    lora_keys = {k.key: k.module for k in ctx.layout.keys if k.kind == "lora"}
    bad = [d for d in ctx.plan.refusals if d.key in lora_keys]
    missing = sorted({lora_keys[d.key] for d in bad if d.problem == "missing"})
    mismatched = list(dict.fromkeys(d.reason for d in bad if d.problem == "shape"))
    unselected = [t for t, _ in ctx.resolved.values() if t is not None and not peft_selects(ctx.config, t)]
    details: dict[str, Any] = {
        "lora_modules": len(ctx.layout.lora),
        "matched": len(ctx.layout.lora) - len(missing),
        "missing": missing[:MAX_LISTED],
        "missing_count": len(missing),
        "shape_mismatches": mismatched[:MAX_LISTED],
        "shape_mismatch_count": len(mismatched),
        "target_modules": ctx.config.target_modules,
    }
    n = len(ctx.layout.lora)
    if not ctx.layout.lora and not ctx.layout.saved:
        return CheckResult(
            "target_modules",
            "fail",
            f"{ctx.layout.path} holds no LoRA factors and no saved modules: the patch would do nothing",
            details,
            hint="check that the adapter was saved after training (peft save_pretrained)",
        )
    if missing:
        return CheckResult(
            "target_modules",
            "fail",
            f"{len(missing)} of {n} target modules are absent from the base, e.g. `{missing[0]}`",
            details,
            hint="the patch targets modules this base does not have; port onto the same architecture",
        )
    if unselected:
        return CheckResult(
            "target_modules",
            "fail",
            f"`target_modules` {ctx.config.target_modules!r} (with `layers_to_transform`, if set) does not "
            f"select `{unselected[0]}` as peft matches names, so peft would not attach "
            f"{len(unselected)} of the patch's {len(ctx.layout.lora)} LoRA modules",
            details,
            hint='list the module names in adapter_config.json, e.g. "target_modules": ["q_proj", "v_proj"] '
            "(a string is a regex that must match the whole module path), or fix `layers_to_transform`",
        )
    if mismatched:
        return CheckResult(
            "target_modules",
            "fail",
            f"{len(mismatched)} target modules have other shapes: {mismatched[0]}",
            details,
            hint="port onto a base of the same size (in_features/out_features must match)",
        )
    if quant is not None:
        return CheckResult(
            "target_modules",
            "warn",
            f"all {n} target modules exist; shapes not compared because {quant}",
            details,
            hint="use the unquantized (bf16/fp32) release of the base for exact checks and merges",
        )
    return CheckResult(
        "target_modules", "pass", f"all {n} target modules exist with matching shapes", details
    )


def check_rank(ctx: _Ctx) -> CheckResult:
    """Each module's stored rank equals ``r`` (or its ``rank_pattern`` entry) on both factors."""
    bad: list[str] = []
    ranks: set[int] = set()
    for module, lm in ctx.layout.lora.items():
        r_cfg, _ = ctx.config.rank_alpha(module)
        ranks.add(lm.rank)
        if lm.a_shape[0] != lm.b_shape[-1]:
            bad.append(f"`{lm.a_key}` has rank {lm.a_shape[0]} but `{lm.b_key}` has {lm.b_shape[-1]}")
        elif lm.rank != r_cfg:
            bad.append(
                f"`{lm.a_key}` has rank {lm.rank} but adapter_config.json gives r={r_cfg} for `{module}`"
            )
    details: dict[str, Any] = {
        "r": ctx.config.r,
        "rank_pattern": ctx.config.rank_pattern,
        "stored_ranks": sorted(ranks),
        "mismatches": bad[:MAX_LISTED],
    }
    if bad:
        return CheckResult(
            "rank",
            "fail",
            f"{len(bad)} modules disagree with the configured rank: {bad[0]}",
            details,
            hint="set `r` (or `rank_pattern`) in adapter_config.json to the rank the tensors were saved with",
        )
    if ctx.layout.lora and not ctx.config.lora_alpha_given:
        return CheckResult(
            "rank",
            "warn",
            "adapter_config.json has no `lora_alpha`; peft will assume 8",
            details,
            hint="add the `lora_alpha` used in training, or the patch's scale will be wrong",
        )
    return CheckResult("rank", "pass", f"ranks {sorted(ranks) or [ctx.config.r]} match the config", details)


def check_modules_to_save(ctx: _Ctx) -> CheckResult:
    """Saved tensors and token-indexed LoRA factors fit the base (the tensor plan): same shape, or
    rows carried over by token string into a grown or re-mapped vocabulary, never shrunk."""
    listed = list(ctx.config.modules_to_save or ())
    lora_keys = {k.key for k in ctx.layout.keys if k.kind == "lora"}
    saved = {st.key for st in ctx.layout.saved.values()}
    mine = [
        d
        for d in ctx.plan.decisions
        if d.key in saved
        or (d.key in lora_keys and (d.action == "carry" or d.problem in ("shrink", "tokenizer")))
    ]
    details: dict[str, Any] = {
        "modules_to_save": listed,
        "tensors": {d.key: {"action": d.action, "base_name": d.target} for d in mine},
        "old_tokenizer": None if ctx.plan.old_vocab_dir is None else str(ctx.plan.old_vocab_dir),
    }
    fails = [d for d in mine if d.action == "refuse"]
    warns = [d.reason for d in mine if d.action == "carry"]
    saved_modules = {n.rpartition(".")[0].rpartition(".")[2] for n in ctx.layout.saved}
    absent = [m for m in listed if m.rpartition(".")[2] not in saved_modules]
    if absent:
        warns.append(f"modules_to_save lists {absent} but the adapter file holds no tensor for them")
    if fails:
        more = f" (+{len(fails) - 1} more)" if len(fails) > 1 else ""
        return CheckResult("modules_to_save", "fail", fails[0].reason + more, details, hint=fails[0].hint)
    if warns:
        return CheckResult(
            "modules_to_save",
            "warn",
            "; ".join(warns),
            details,
            hint="portable: `port` rewrites the patch with the rows carried over by token string",
        )
    if not ctx.layout.saved:
        return CheckResult("modules_to_save", "pass", "the patch saves no full modules", details)
    return CheckResult(
        "modules_to_save", "pass", f"{len(ctx.layout.saved)} saved tensors match the base's shapes", details
    )


def check_tied_embeddings(ctx: _Ctx) -> CheckResult:
    """``tie_word_embeddings`` agrees with the shards (is ``lm_head.weight`` stored?), and the patch keeps tying sound."""
    tied = ctx.base.tied
    stored = any(n.endswith("lm_head.weight") for n in ctx.base.tensors)
    embed = ctx.base.embedding_name()
    details: dict[str, Any] = {"tie_word_embeddings": tied, "lm_head_stored": stored, "embedding": embed}
    if not tied and not stored:
        return CheckResult(
            "tied_embeddings",
            "fail",
            f"config.json says `tie_word_embeddings: false` but no shard of {ctx.base_dir} holds `lm_head.weight`: "
            "transformers would initialize the output layer randomly",
            details,
            hint="set `tie_word_embeddings: true` in config.json if the model ties its embeddings, or restore lm_head.weight",
        )
    touches = [
        m
        for m in (*ctx.layout.lora, *(n.rpartition(".")[0] for n in ctx.layout.saved))
        if m.endswith(("embed_tokens", "lm_head"))
    ]
    details["patch_touches"] = touches
    if tied and touches:
        keep = ctx.config.ensure_weight_tying
        how = (
            "keeps them tied (ensure_weight_tying)"
            if keep
            else "unties them (lm_head keeps the base rows, as peft does unmerged)"
        )
        return CheckResult(
            "tied_embeddings",
            "warn",
            f"the base ties its embeddings and the patch modifies {', '.join(f'`{t}`' for t in touches)}; a merge {how}",
            details,
            hint="expected for patches that train the embeddings; the merged model's config says what it did",
        )
    if tied and stored:
        return CheckResult(
            "tied_embeddings",
            "pass",
            "tied; a stored `lm_head.weight` is ignored by transformers (tied to the embedding)",
            details,
        )
    return CheckResult(
        "tied_embeddings", "pass", "tied, lm_head not stored" if tied else "untied, lm_head stored", details
    )


def check_adapter_keys(ctx: _Ctx) -> CheckResult:
    """Adapter keys are understood and normalize onto the base (prefix, ``.default`` infix, ``language_model.``)."""
    lay = ctx.layout
    total = len(lay.lora) * 2 + len(lay.saved)
    rewrites = sorted({rw for _, rw in ctx.resolved.values() if rw})
    renamed = sum(1 for m, (t, _) in ctx.resolved.items() if t is not None and t != m)
    details: dict[str, Any] = {
        "keys": total + len(lay.unknown),
        "with_peft_prefix": lay.prefixed,
        "with_adapter_infix": lay.infixed,
        "adapter_names": sorted(lay.adapter_names),
        "wrapper_rewrites": rewrites,
        "renamed_modules": renamed,
        "unknown": lay.unknown[:MAX_LISTED],
        "incomplete": lay.incomplete[:MAX_LISTED],
    }
    if lay.unknown:
        return CheckResult(
            "adapter_keys",
            "fail",
            f"{len(lay.unknown)} adapter tensors are not LoRA factors or saved modules, e.g. `{lay.unknown[0]}`",
            details,
            hint="only plain LoRA adapters can be ported; re-export the patch with peft (peft_type LORA)",
        )
    if lay.incomplete:
        return CheckResult(
            "adapter_keys",
            "fail",
            f"module `{lay.incomplete[0]}` has only one of its LoRA factors (lora_A without lora_B or the reverse)",
            details,
            hint="the adapter file is truncated or mis-exported; re-save it",
        )
    if len(lay.adapter_names) > 1:
        return CheckResult(
            "adapter_keys",
            "fail",
            f"the adapter file mixes several adapters ({', '.join(sorted(lay.adapter_names))})",
            details,
            hint="save one adapter per folder (peft save_pretrained(selected_adapters=[...]))",
        )
    unprefixed = len(lay.keys) - lay.prefixed
    details["old_base_copies"] = lay.base_copies[:MAX_LISTED]
    if rewrites or not lay.canonical:
        parts = []
        if lay.base_copies:
            parts.append(
                f"{len(lay.base_copies)} copies of the old base's weights (e.g. `{lay.base_copies[0]}`, from peft's "
                "save_embedding_layers) are dropped so the new base's weights are used"
            )
        if unprefixed:
            parts.append(f"{unprefixed} keys lack `base_model.model.`")
        if lay.infixed:
            parts.append(f"{lay.infixed} keys carry the `.{next(iter(lay.adapter_names))}` adapter infix")
        parts.extend(rewrites)
        return CheckResult(
            "adapter_keys",
            "warn",
            "keys normalized: " + "; ".join(parts),
            details,
            hint="portable: `port` writes a copy with peft's canonical key names",
        )
    return CheckResult("adapter_keys", "pass", f"{total} keys in peft's canonical form", details)


def _peft_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("peft")
    except PackageNotFoundError:
        return "(not installed)"


def check_adapter_config(ctx: _Ctx) -> tuple[CheckResult, bool]:
    """``adapter_config.json`` keys unknown to the installed peft: dropped if null/default, refused otherwise.

    Same rule as :meth:`portllm_edge.patches.adapter_format.AdapterConfig.from_dict`.
    """
    cfg, version = ctx.config, _peft_version()
    details: dict[str, Any] = {
        "peft_version": version,
        "written_by_peft": cfg.peft_version,
        "dropped": list(cfg.dropped),
        "refused": dict(cfg.refused),
    }
    if cfg.refused:
        shown = ", ".join(f"`{k}`={v!r}" for k, v in cfg.refused.items())
        return CheckResult(
            "adapter_config",
            "fail",
            f"adapter_config.json sets {shown}, unknown to peft {version}; it may change the adapter's math",
            details,
            hint="upgrade peft to the version that wrote the patch, or remove the key if it does not change ΔW",
        ), False
    if cfg.dropped:
        return CheckResult(
            "adapter_config",
            "warn",
            f"dropped {', '.join(f'`{k}`' for k in cfg.dropped)} (unknown to peft {version}, null/default)",
            details,
            hint="harmless; the ported copy omits these keys",
        ), True
    return CheckResult("adapter_config", "pass", f"all keys known to peft {version}", details), False


def check_finite(ctx: _Ctx) -> CheckResult:
    """Every tensor of the patch is finite (no NaN/±Inf), scanned from the file without torch."""
    from portllm_edge.tensorio import find_nonfinite_in_file

    bad = find_nonfinite_in_file(ctx.layout.path)
    details: dict[str, Any] = {"tensors": len(ctx.layout.keys)}
    if bad is not None:
        details["tensor"] = bad.name
        return CheckResult(
            "finite",
            "fail",
            f"{ctx.layout.path}, tensor `{bad.name}`: holds non-finite values ({bad.describe()})",
            details,
            hint="the patch diverged in training or is corrupt; retrain it (lower learning rate) or re-export it",
        )
    return CheckResult("finite", "pass", f"all {len(ctx.layout.keys)} tensors are finite", details)


DORA_FORCE_NOTE = "DoRA then uses the new base's norms"


def check_additive(ctx: _Ctx) -> CheckResult:
    """The patch is a plain additive ΔW = scale·B·A (PortLLM's assumption), not DoRA/PiSSA/LoftQ/...."""
    cfg = ctx.config
    details: dict[str, Any] = {
        "peft_type": cfg.peft_type,
        "use_dora": cfg.use_dora,
        "init_lora_weights": cfg.init_lora_weights,
    }
    fails: list[tuple[str, str]] = []
    warns: list[str] = []
    if cfg.use_dora or ctx.layout.dora:
        fails.append(
            (
                "DoRA patch (`use_dora: true`): it rescales each column by the old base's weight norm ‖W_old + BA‖, "
                "so its effect on a new base is not W_new + ΔW",
                f"retrain as plain LoRA, or pass --force to attach it anyway ({DORA_FORCE_NOTE})",
            )
        )
    fails.extend(cfg.non_additive_reasons())
    if cfg.lora_bias:
        warns.append(
            "`lora_bias: true` adds a trained bias; attach handles it, the streaming merge refuses it"
        )
    if cfg.bias != "none":
        warns.append(f"`bias: {cfg.bias}` saves trained biases that replace the new base's biases")
    if cfg.alora_invocation_tokens:
        warns.append(
            "aLoRA (`alora_invocation_tokens`) activates after token ids of the old tokenizer; check they still exist"
        )
    if fails:
        return CheckResult("additive", "fail", fails[0][0], details, hint=fails[0][1])
    if warns:
        return CheckResult("additive", "warn", "; ".join(warns), details)
    scale = "lora_alpha/sqrt(r)" if cfg.use_rslora else "lora_alpha/r"
    return CheckResult("additive", "pass", f"plain LoRA: ΔW = ({scale})·B·A, portable as W_new + ΔW", details)


def check_tokenizer(ctx: _Ctx) -> CheckResult:
    """Compare the patch's tokenizer (patch folder, --old, or its base folder) with the base's, by token string."""
    new_vocab = read_vocab(ctx.base_dir)
    src = ctx.plan.old_vocab_dir
    details: dict[str, Any] = {"old_tokenizer": None if src is None else str(src)}
    if new_vocab is None:
        return CheckResult(
            "tokenizer",
            "warn",
            f"{ctx.base_dir} has no tokenizer files",
            details,
            hint="copy tokenizer.json (or tokenizer.model) into the base folder",
        )
    if src is None:
        details["new_size"] = len(new_vocab)
        return CheckResult(
            "tokenizer",
            "warn",
            "the patch's tokenizer is unknown; vocabularies not compared",
            details,
            hint="pass --old OLD_BASE to compare the vocabularies",
        )
    old_vocab = read_vocab(src) or {}
    diff = compare_vocabs(old_vocab, new_vocab)
    details.update(diff.to_dict())
    if diff.same:
        return CheckResult("tokenizer", "pass", f"same vocabulary ({diff.new_size} tokens)", details)
    shared_frac = diff.shared / max(diff.old_size, 1)
    summary = (
        f"vocabulary changed {diff.old_size} → {diff.new_size}: {diff.added_count} added, "
        f"{diff.removed_count} removed, {diff.remapped_count} re-mapped"
    )
    if shared_frac < MIN_SHARED_VOCAB:
        return CheckResult(
            "tokenizer",
            "fail",
            f"{summary}; only {shared_frac:.0%} of the patch's tokens exist in the base: a different tokenizer",
            details,
            hint="port onto a newer version of the same model (same tokenizer family)",
        )
    return CheckResult(
        "tokenizer",
        "warn",
        summary,
        details,
        hint="shared tokens keep their meaning; saved embedding rows are carried over by token string",
    )


# --------------------------------------------------------------------------- entry point


def run_preflight(adapter_dir: Path, base_dir: Path, *, old_base_dir: Path | None = None) -> PreflightReport:
    """Check whether a patch fits a base, reading only configs, tokenizer files and safetensors headers.

    Args:
        adapter_dir: The patch (peft adapter folder with ``adapter_config.json`` and
            ``adapter_model.safetensors``).
        base_dir: The new base model folder (``config.json`` + safetensors + tokenizer).
        old_base_dir: The base the patch was trained on, when available (sharper
            architecture/hidden-size/tokenizer checks).

    Returns:
        A :class:`PreflightReport` with one :class:`CheckResult` per name in :data:`CHECK_NAMES`.

    Raises:
        PatchError: the adapter folder is unreadable (missing/invalid config or weights).
        BaseModelError: a base folder is unreadable (missing config, invalid headers, pickled weights).
    """
    adapter_dir, base_dir = Path(adapter_dir), Path(base_dir)
    old_base_dir = Path(old_base_dir) if old_base_dir is not None else None
    config = AdapterConfig.read(adapter_dir, refuse_unknown=False)
    layout = read_adapter_layout(adapter_dir)
    base = read_base_index(base_dir)
    if old_base_dir is not None and not old_base_dir.is_dir():
        raise BaseModelError(
            f"{old_base_dir}: old base folder not found",
            hint="pass the folder of the base the patch was trained on",
        )
    old_config, old_source = _old_config(config, old_base_dir)
    plan = read_tensor_plan(adapter_dir, config, layout, base, old_base_dir)
    ctx = _Ctx(adapter_dir, base_dir, old_base_dir, config, layout, base, old_config, old_source, plan)
    base_modules = base.modules
    ctx.resolved = {m: resolve_module(m, base_modules) for m in layout.lora}

    keys = check_adapter_keys(ctx)
    cfg_check, drops = check_adapter_config(ctx)
    checks = [
        check_architecture(ctx),
        check_hidden_size(ctx),
        check_target_modules(ctx),
        check_rank(ctx),
        check_modules_to_save(ctx),
        check_tied_embeddings(ctx),
        keys,
        check_finite(ctx),
        cfg_check,
        check_additive(ctx),
        check_tokenizer(ctx),
    ]
    return PreflightReport(adapter_dir, base_dir, old_base_dir, checks, needs_rewrite=plan.rewrites or drops)


def prepare_adapter(
    adapter_dir: Path,
    base_dir: Path,
    work_dir: Path,
    *,
    old_base_dir: Path | None = None,
    report: PreflightReport | None = None,
) -> Path:
    """Return an adapter folder peft can attach to ``base_dir``: the patch itself, or a rewritten copy.

    A copy (keys normalized, vocabulary rows carried over, unknown null config keys
    dropped; see :func:`portllm_edge.porting.vocab.port_adapter`) is written to
    ``work_dir / "ported-adapter"`` when the report says ``needs_rewrite``.

    Args:
        adapter_dir: The patch.
        base_dir: The new base.
        work_dir: A scratch folder for the copy (created).
        old_base_dir: The old base (for the old tokenizer).
        report: A report from :func:`run_preflight` (computed when ``None``).

    Returns:
        The adapter folder to attach.
    """
    from portllm_edge.porting.vocab import port_adapter

    rep = report if report is not None else run_preflight(adapter_dir, base_dir, old_base_dir=old_base_dir)
    if not rep.needs_rewrite:
        return Path(adapter_dir)
    out = Path(work_dir) / "ported-adapter"
    port_adapter(adapter_dir, base_dir, out, old_vocab_dir=old_base_dir, overwrite=True)
    return out


__all__ = ["CHECK_NAMES", "CheckResult", "PreflightReport", "Status", "prepare_adapter", "run_preflight"]
