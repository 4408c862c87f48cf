"""The peft LoRA adapter format, written once: key grammar, validated config, scaling.

Why this module exists: store import, the preflight, the port rewrite, the
streaming merge, drift and export all read adapters saved by peft (and by
trainers that save peft's model state with the adapter name still in the keys).
Each used to carry its own key regex, config reader and scale formula, and they
disagreed. Every rule below follows peft 0.21's own code, named where it is used:

* **keys** (peft ``utils/save_and_load.py``, ``tuners/tuners_utils.py``
  ``_remove_adapter_name_from_state_dict_key``): a saved key is
  ``[base_model.model.]<module>.<part>[.<adapter name>][.weight|.bias]``; peft's
  canonical form carries the prefix and no adapter name (``lora_embedding_A/B``
  and DoRA's ``lora_magnitude_vector`` have no ``.weight``); a ``modules_to_save``
  module is saved as ``<module>.weight`` (model state: ``<module>.modules_to_save.<name>.weight``);
* **config** (peft ``config.py`` ``PeftConfigMixin.from_peft_type``): keys the
  installed peft's ``LoraConfig`` does not define are dropped with a warning when
  null/empty/false, and refused (naming the key) otherwise, because they may
  change ΔW. The known keys are read from peft's source with :mod:`ast`, so
  nothing here imports peft or torch;
* **scaling** (peft ``tuners/lora/model.py`` ``_create_and_replace`` and
  ``tuners/lora/layer.py`` ``update_layer``): ``r``/``lora_alpha`` per module from
  ``rank_pattern``/``alpha_pattern`` (``utils/other.py`` ``get_pattern_key``: the
  first key ``k`` with ``re.match(rf"(.*\\.)?({k})$", module)``), scale =
  ``alpha / r``, or ``alpha / sqrt(r)`` with ``use_rslora``;
* **fan_in_fan_out** (peft ``tuners/lora/layer.py`` ``dispatch_default``): decided
  by the module type, never by the config: ``transformers`` ``Conv1D`` => True,
  ``nn.Linear`` => False.

It must not import torch, peft or transformers, or read tensor data.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
import math
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from portllm_edge.errors import PatchError

log = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLED_WEIGHTS_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
PEFT_PREFIX = "base_model.model."
DEFAULT_ADAPTER_NAME = "default"

LORA_PARTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")
"""Tensor kinds of a LoRA (and DoRA) module."""
_PARAM_PARTS = ("lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")
"""Parts peft saves without a ``.weight`` suffix (nn.Parameter, or DoRA's stripped suffix)."""
OTHER_METHOD_PARTS = (
    "trainable_tokens_delta",
    "original_module",
    "hada_",
    "lokr_",
    "ia3_",
    "oft_",
    "boft_",
    "lora_diag",
)
"""Key fragments of tensors that belong to other peft methods or variants (not portable LoRA)."""

KeyKind = Literal["lora", "saved", "base_copy", "other"]


# --------------------------------------------------------------------------- key grammar

_NAME = r"[A-Za-z0-9_\-]+"
_LORA_KEY = re.compile(
    rf"^(?P<module>.+)\.(?P<part>{'|'.join(LORA_PARTS)})(?:\.(?P<adapter>{_NAME}))??(?:\.(?P<param>weight|bias))?$"
)
_MTS_KEY = re.compile(rf"^(?P<module>.+)\.modules_to_save\.(?P<adapter>{_NAME})\.(?P<param>weight|bias)$")
_FULL_KEY = re.compile(r"^(?P<module>.+)\.(?P<param>weight|bias)$")


@dataclass(frozen=True)
class AdapterKey:
    """One saved tensor key, parsed.

    Attributes:
        key: The key as stored.
        kind: ``"lora"`` (a LoRA/DoRA factor), ``"saved"`` (a full ``modules_to_save``
            tensor), ``"base_copy"`` (``<module>.base_layer.weight``: a copy of the old
            base's weight, peft ``save_embedding_layers``) or ``"other"`` (another method).
        module: Module path without the peft prefix or adapter name (``model.layers.0.self_attn.q_proj``).
        part: For ``lora``: one of :data:`LORA_PARTS`; else ``""``.
        param: ``"weight"``, ``"bias"`` or ``None`` (a bare parameter).
        adapter_name: The adapter-name infix (``"default"``), or ``None`` in peft's canonical form.
        prefixed: The key starts with ``base_model.model.``.
    """

    key: str
    kind: KeyKind
    module: str
    part: str
    param: str | None
    adapter_name: str | None
    prefixed: bool

    @property
    def slot(self) -> str:
        """``lora_A``, ``lora_B.bias``, ``lora_embedding_A``, ... (part plus a non-weight param)."""
        return self.part + ("" if self.param in (None, "weight") else f".{self.param}")

    @property
    def tensor_name(self) -> str:
        """For a saved tensor: ``<module>.<param>`` (the base tensor it replaces)."""
        return f"{self.module}.{self.param or 'weight'}"


def parse_key(key: str) -> AdapterKey:
    """Parse one adapter key (see the module docstring for the grammar).

    Args:
        key: A key of ``adapter_model.safetensors``.

    Returns:
        An :class:`AdapterKey`. Never raises: unknown keys come back as ``kind="other"``.
    """
    prefixed = key.startswith(PEFT_PREFIX)
    rel = key[len(PEFT_PREFIX) :] if prefixed else key
    m = _LORA_KEY.match(rel)
    if m:
        adapter, param = m["adapter"], m["param"]
        return AdapterKey(key, "lora", m["module"], m["part"], param, adapter, prefixed)
    m = _MTS_KEY.match(rel)
    if m:
        return AdapterKey(key, "saved", m["module"], "", m["param"], m["adapter"], prefixed)
    if any(p in rel for p in OTHER_METHOD_PARTS):
        return AdapterKey(key, "other", rel, "", None, None, prefixed)
    m = _FULL_KEY.match(rel)
    if m and m["module"].endswith(".base_layer"):
        return AdapterKey(
            key, "base_copy", m["module"][: -len(".base_layer")], "", m["param"], None, prefixed
        )
    if m:
        return AdapterKey(key, "saved", m["module"], "", m["param"], None, prefixed)
    return AdapterKey(key, "other", rel, "", None, None, prefixed)


def canonical_key(module: str, slot: str) -> str:
    """peft's saved key for ``slot`` of ``module`` (``base_model.model.<module>.lora_A.weight`` ...).

    Args:
        module: Base module path.
        slot: ``lora_A``, ``lora_B``, ``lora_B.bias``, ``lora_embedding_A``,
            ``lora_embedding_B``, ``lora_magnitude_vector``, or ``weight``/``bias``
            for a saved (``modules_to_save``) tensor.
    """
    if slot in ("weight", "bias") or slot in _PARAM_PARTS or "." in slot:
        return f"{PEFT_PREFIX}{module}.{slot}"
    return f"{PEFT_PREFIX}{module}.{slot}.weight"


def model_state_keys(key: str, adapter_name: str = DEFAULT_ADAPTER_NAME) -> list[str]:
    """Parameter names a saved key can load into, in a ``PeftModel`` whose adapter is ``adapter_name``.

    Inverse of peft's ``_remove_adapter_name_from_state_dict_key`` (plus the DoRA
    ``.weight`` suffix and the ``modules_to_save.<name>.`` wrapper). The saved
    key's own prefix is kept.
    """
    k = parse_key(key)
    head = key[: len(key) - len(key.removeprefix(PEFT_PREFIX))] + k.module
    if k.kind == "lora":
        tail = "" if k.param is None else f".{k.param}"
        if k.part == "lora_magnitude_vector":
            tail = ".weight"
        return [f"{head}.{k.part}.{adapter_name}{tail}"]
    if k.kind == "saved":
        return [f"{head}.modules_to_save.{adapter_name}.{k.param}", f"{head}.{k.param}"]
    return [key]


# --------------------------------------------------------------------------- config


@functools.lru_cache(maxsize=1)
def known_lora_config_keys() -> frozenset[str]:
    """Field names of the installed peft's ``LoraConfig`` (and its bases), read from peft's source.

    peft is located with :func:`importlib.util.find_spec` (which does not import it)
    and ``config.py`` / ``tuners/lora/config.py`` are parsed with :mod:`ast`:
    ``import peft`` costs seconds (it imports torch), this costs milliseconds.
    A test compares the result with ``dataclasses.fields(peft.LoraConfig)``.

    Raises:
        PatchError: peft is not installed or its source has no ``LoraConfig``.
    """
    spec = importlib.util.find_spec("peft")
    if spec is None or not spec.submodule_search_locations:
        raise PatchError(
            "peft is not installed", hint="install portllm-edge with its dependencies (pip install -e .)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    wanted = {"PeftConfigMixin", "PeftConfig", "LoraConfig"}
    fields: set[str] = set()
    found: set[str] = set()
    for rel in ("config.py", "tuners/lora/config.py"):
        tree = ast.parse((root / rel).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name in wanted:
                found.add(node.name)
                fields.update(
                    s.target.id
                    for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                )
    if found != wanted:
        raise PatchError(
            f"{root}: peft's source has no {', '.join(sorted(wanted - found))} class",
            hint="install a peft version portllm-edge supports (see pyproject.toml)",
        )
    return frozenset(fields)


_UNSET: tuple[Any, ...] = (None, False, "", 0, {}, [])

NON_ADDITIVE_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
"""``init_lora_weights`` values that rewrite the base weights at init (a residual base),
so the saved A/B only make sense against that modified old base."""

NON_ADDITIVE_VARIANTS = ("use_qalora", "use_bdlora", "kasa_config", "arrow_config", "monteclora_config")
"""Known peft keys that, when set, make the module's output something other than W·x + scale·B·A·x."""


def _is_set(value: Any) -> bool:
    return not any(value is u or (type(value) is type(u) and value == u) for u in _UNSET)


class AdapterConfig(BaseModel):
    """A validated LoRA ``adapter_config.json`` (the fields portllm-edge uses).

    Build it with :meth:`read` or :meth:`from_dict`. Defaults are peft's
    ``LoraConfig`` defaults. ``known`` is the config without dropped keys (what a
    rewritten copy stores); ``dropped`` and ``refused`` list unknown keys.

    Attributes:
        r: Default rank (peft default 8). lora_alpha: Scale numerator (peft default 8).
        lora_alpha_given: ``lora_alpha`` was in the file (peft assumes 8 otherwise).
        target_modules: Module names or peft's regex string.
        rank_pattern / alpha_pattern: Per-module overrides (see :func:`module_scaling`).
        fan_in_fan_out: As stored; the merge decides it from the module type (:func:`fan_in_fan_out`).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", arbitrary_types_allowed=True)

    peft_type: str = "LORA"
    r: int = 8
    lora_alpha: float = 8.0
    lora_alpha_given: bool = True
    target_modules: tuple[str, ...] | str
    modules_to_save: tuple[str, ...] | None = None
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    use_rslora: bool = False
    use_dora: bool = False
    fan_in_fan_out: bool = False
    init_lora_weights: bool | str = True
    lora_bias: bool = False
    bias: str = "none"
    ensure_weight_tying: bool = False
    layer_replication: Any = None
    target_parameters: Any = None
    trainable_token_indices: Any = None
    alora_invocation_tokens: Any = None
    peft_version: str | None = None
    base_model_name_or_path: str | None = None
    task_type: str | None = None
    known: dict[str, Any] = {}
    dropped: tuple[str, ...] = ()
    refused: dict[str, Any] = {}

    @field_validator("peft_type", mode="before")
    @classmethod
    def _peft_type(cls, v: Any) -> str:
        if not isinstance(v, str) or v.upper() != "LORA":
            raise ValueError(
                f"`peft_type` is {v!r}; portllm-edge ports LoRA adapters only (peft_type 'LORA')"
            )
        return v.upper()

    @field_validator("r", mode="before")
    @classmethod
    def _r(cls, v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"`r` is {v!r}; it must be a positive integer")
        return v

    @field_validator("lora_alpha", mode="before")
    @classmethod
    def _alpha(cls, v: Any) -> float:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ValueError(f"`lora_alpha` is {v!r}; it must be a number")
        if not (math.isfinite(v) and v > 0):
            raise ValueError(
                f"`lora_alpha` is {v!r}; it must be a finite, positive number "
                "(ΔW = lora_alpha/r·B·A: 0 makes the patch do nothing, a negative value flips its sign)"
            )
        return float(v)

    @field_validator("target_modules", mode="before")
    @classmethod
    def _targets(cls, v: Any) -> tuple[str, ...] | str:
        if not (isinstance(v, str) or (isinstance(v, list) and all(isinstance(t, str) for t in v))):
            raise ValueError(f"`target_modules` is {v!r}; it must be a list of names or a regex")
        if not v:
            raise ValueError("`target_modules` is empty, so peft would attach the patch to no module")
        if isinstance(v, str):
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(
                    f"`target_modules` {v!r} is not a valid regular expression ({exc})"
                ) from None
            return v
        return tuple(v)

    @field_validator("modules_to_save", mode="before")
    @classmethod
    def _mts(cls, v: Any) -> tuple[str, ...] | None:
        if v is None:
            return None
        if not (isinstance(v, list) and all(isinstance(m, str) for m in v)):
            raise ValueError(f"`modules_to_save` is {v!r}; it must be a list of names or null")
        return tuple(v) or None

    @field_validator("use_rslora", "use_dora", "fan_in_fan_out", "lora_bias", mode="before")
    @classmethod
    def _flag(cls, v: Any, info: Any) -> bool:
        # peft tests these with `if flag:`, so the string "false" would switch the variant on.
        if v is None:
            return False
        if not isinstance(v, bool):
            raise ValueError(f"`{info.field_name}` is {v!r}; it must be true or false (JSON booleans)")
        return v

    @field_validator("rank_pattern", mode="before")
    @classmethod
    def _ranks(cls, v: Any) -> dict[str, int]:
        v = v or {}
        if not isinstance(v, dict) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v.values()
        ):
            raise ValueError(
                f"`rank_pattern` is {v!r}; it must map module patterns to positive integer ranks"
            )
        _check_pattern_keys("rank_pattern", v)
        return dict(v)

    @field_validator("alpha_pattern", mode="before")
    @classmethod
    def _alphas(cls, v: Any) -> dict[str, float]:
        v = v or {}
        if not isinstance(v, dict) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
            for x in v.values()
        ):
            raise ValueError(
                f"`alpha_pattern` is {v!r}; it must map module patterns to finite, positive alphas"
            )
        _check_pattern_keys("alpha_pattern", v)
        return {k: float(x) for k, x in v.items()}

    @field_validator("peft_version", "base_model_name_or_path", "task_type", mode="before")
    @classmethod
    def _opt_str(cls, v: Any) -> str | None:
        return v if isinstance(v, str) else None

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], source: Path | str, *, refuse_unknown: bool = True
    ) -> AdapterConfig:
        """Validate a parsed ``adapter_config.json``.

        Args:
            data: The JSON object.
            source: The file, for messages.
            refuse_unknown: Raise on unknown keys with a non-default value (else
                they are listed in :attr:`refused` for the caller to report).

        Raises:
            PatchError: naming ``source`` and the field, with how to fix it.
        """
        known_keys = known_lora_config_keys()
        unknown = sorted(k for k in data if k not in known_keys)
        dropped = tuple(k for k in unknown if not _is_set(data[k]))
        refused = {k: data[k] for k in unknown if k not in dropped}
        if dropped:
            log.warning("%s: dropped keys unknown to the installed peft (null/default): %s", source, dropped)
        if refused and refuse_unknown:
            shown = ", ".join(f"`{k}`={v!r}" for k, v in refused.items())
            raise PatchError(
                f"{source}: sets {shown}, unknown to the installed peft; it may change the adapter's math",
                hint="upgrade peft to the version that wrote the patch, or remove the key if it does not change ΔW",
            )
        known = {k: v for k, v in data.items() if k not in dropped}
        fields = {k: v for k, v in known.items() if k in cls.model_fields and k not in _META_FIELDS}
        if "target_modules" not in fields:
            fields["target_modules"] = None
        try:
            return cls(
                **fields,
                lora_alpha_given="lora_alpha" in data,
                known=known,
                dropped=dropped,
                refused=refused,
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            msg = str(err.get("ctx", {}).get("error") or err["msg"]).removeprefix("Value error, ")
            if not msg.startswith("`"):
                msg = f"`{'.'.join(str(p) for p in err['loc'])}` is invalid ({msg})"
            raise PatchError(f"{source}: {msg}", hint=_hint_for(msg)) from None

    @classmethod
    def read(cls, folder: str | Path, *, refuse_unknown: bool = True) -> AdapterConfig:
        """Read and validate ``folder/adapter_config.json`` (see :meth:`from_dict`).

        Raises:
            PatchError: missing, not a JSON object, or a field is invalid.
        """
        from portllm_edge import tensorio

        d = Path(folder)
        path = d / CONFIG_NAME
        if not path.is_file():
            raise PatchError(
                f"{d}: no {CONFIG_NAME} in the adapter folder",
                hint="point to a folder saved by peft's `save_pretrained` (adapter_config.json + adapter_model.safetensors)",
            )
        try:
            data = tensorio.read_small_json(path)
        except PatchError:
            raise
        except (OSError, ValueError) as exc:
            raise PatchError(f"{path}: is not valid JSON ({exc})", hint=_DEFAULT_HINT) from None
        if not isinstance(data, dict):
            raise PatchError(f"{path}: holds a JSON {type(data).__name__}, not an object", hint=_DEFAULT_HINT)
        return cls.from_dict(data, path, refuse_unknown=refuse_unknown)

    def rank_alpha(self, module: str) -> tuple[int, float]:
        """``(r, lora_alpha)`` peft gives ``module`` (``rank_pattern``/``alpha_pattern``, see :func:`pattern_key`)."""
        rk = pattern_key(self.rank_pattern, module)
        ak = pattern_key(self.alpha_pattern, module)
        r = self.rank_pattern[rk] if rk is not None else self.r
        alpha = self.alpha_pattern[ak] if ak is not None else self.lora_alpha
        return r, alpha

    def scaling(self, module: str) -> float:
        """LoRA scale of ``module``: ``alpha / r``, or ``alpha / sqrt(r)`` with ``use_rslora``.

        Source: peft ``LoraLayer.update_layer`` (Hu et al. 2021 §4.1; Kalajdzievski 2023, rsLoRA).
        """
        r, alpha = self.rank_alpha(module)
        return lora_scale(r, alpha, use_rslora=self.use_rslora)

    def non_additive_reasons(self) -> list[tuple[str, str]]:
        """``(reason, fix)`` for each setting that makes the patch something other than W + scale·B·A."""
        out: list[tuple[str, str]] = []
        init = self.init_lora_weights
        if isinstance(init, str) and init.lower().startswith(NON_ADDITIVE_INITS):
            out.append(
                (
                    f"`init_lora_weights: {init}` rewrote the old base's weights at init (residual base); A and B "
                    "only make sense against that modified old base",
                    "convert the patch to a plain LoRA with peft's `path_initial_model_for_weight_conversion` "
                    "before porting",
                )
            )
        rules = (
            (
                "layer_replication",
                "changes the model's layer stack; not a weight update",
                "retrain without it",
            ),
            (
                "target_parameters",
                "(LoRA on raw parameters, e.g. MoE experts) is not supported",
                "retrain with target_modules on nn.Linear layers",
            ),
            (
                "trainable_token_indices",
                "stores per-token-id deltas that are not ported across vocabularies",
                "retrain with modules_to_save=['embed_tokens'] instead, which ports by token string",
            ),
        )
        for key, why, fix in rules:
            if _is_set(getattr(self, key)):
                out.append((f"`{key}` {why}", fix))
        for key in NON_ADDITIVE_VARIANTS:
            if _is_set(self.known.get(key)):
                out.append(
                    (
                        f"`{key}` is a LoRA variant whose output is not W·x + scale·B·A·x",
                        "retrain as plain LoRA",
                    )
                )
        return out


def _check_pattern_keys(field: str, patterns: dict[str, Any]) -> None:
    """Each key must compile as peft uses it (:func:`pattern_key`); peft raises ``re.error`` at attach otherwise."""
    for key in patterns:
        try:
            re.compile(rf"(.*\.)?({key})$")
        except re.error as exc:
            raise ValueError(f"`{field}` key {key!r} is not a valid regular expression ({exc})") from None


_META_FIELDS = {"known", "dropped", "refused", "lora_alpha_given"}
_DEFAULT_HINT = "re-export the adapter with peft's `save_pretrained` (a LoRA adapter_config.json)"


def _hint_for(msg: str) -> str:
    if msg.startswith("`peft_type`"):
        return "train the patch as a LoRA adapter (peft LoraConfig), or use a LoRA export of it"
    if msg.startswith(("`lora_alpha`", "`alpha_pattern`")) and "positive" in msg:
        return "set `lora_alpha` to the value the patch was trained with (often 2 × r), or re-export it"
    if msg.startswith(("`r`", "`rank_pattern`")) and "positive" in msg:
        return "set `r` to the rank the patch was trained with (the lora_A tensors' first dimension), or re-export it"
    if "empty" in msg:
        return 'list the modules the patch was trained on (e.g. ["q_proj", "v_proj"]), or re-export it'
    if "regular expression" in msg and "_pattern`" in msg:
        return "fix the key (peft matches it as a regex against module names, e.g. `q_proj`), or re-export it"
    if "regular expression" in msg:
        return 'fix the regex or give a list of module names such as ["q_proj", "v_proj"]'
    return _DEFAULT_HINT


# --------------------------------------------------------------------------- scaling, layout


def lora_scale(r: int, lora_alpha: float, *, use_rslora: bool) -> float:
    """``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA (peft ``LoraLayer.update_layer``)."""
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


ALL_LINEAR = "all-linear"
"""peft's ``target_modules`` shorthand for every linear layer but the output head."""


def peft_selects(config: AdapterConfig, module: str) -> bool:
    """Whether peft attaches a LoRA layer to ``module`` (a base module path) under ``config``.

    Source: peft ``tuners/tuners_utils.py`` ``check_target_module_exists``: a string
    ``target_modules`` must ``re.fullmatch`` the whole path (``all-linear`` selects
    every linear layer); a list entry must equal the path or be its last dotted
    part(s); ``layers_to_transform`` keeps the layer index found by
    ``layers_pattern`` (default: the first ``.<name>.<digits>.`` segment).
    """
    targets = config.target_modules
    if isinstance(targets, str):
        return targets.lower() == ALL_LINEAR or re.fullmatch(targets, module) is not None
    if not (module in targets or any(module.endswith(f".{t}") for t in targets)):
        return False
    layers = config.known.get("layers_to_transform")
    if layers is None or layers == []:
        return True
    if isinstance(layers, bool) or not isinstance(layers, (int, list)):
        return False
    pattern = config.known.get("layers_pattern")
    patterns = [pattern] if isinstance(pattern, str) else list(pattern or [])
    if not patterns:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", module)
    else:
        match = None
        for p in patterns:
            try:
                match = re.match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", module)
            except re.error:
                continue
            if match is not None:
                break
    if match is None:
        return False
    index = int(match.group("idx"))
    return index == layers if isinstance(layers, int) else index in layers


def pattern_key(patterns: dict[str, Any], module: str) -> str | None:
    """The ``rank_pattern``/``alpha_pattern`` key peft applies to ``module``, or ``None``.

    Source: peft ``utils/other.py`` ``get_pattern_key``: the first key ``k`` (in the
    config's order) with ``re.match(rf"(.*\\.)?({k})$", module)``. A key that is not
    a valid regex matches nothing (peft would fail on it).
    """
    for key in patterns:
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return key
        except re.error:
            continue
    return None


CONV1D_MODULES: dict[str, frozenset[str]] = {
    mt: frozenset({"c_attn", "q_attn", "c_fc", "c_proj"})
    for mt in ("gpt2", "openai-gpt", "imagegpt", "decision_transformer")
}
"""model_type -> leaf names of the modules transformers builds as ``Conv1D``
(weight stored ``[in_features, out_features]``). A test checks it against transformers."""


def fan_in_fan_out(model_type: str | None, module: str) -> bool:
    """Whether peft treats ``module`` as fan-in-fan-out (a ``Conv1D``): from the module type, as peft does.

    peft (``dispatch_default``) overrides the config's ``fan_in_fan_out``: True for
    ``transformers.pytorch_utils.Conv1D``, False for ``nn.Linear``. Without loading
    the model, the module type comes from :data:`CONV1D_MODULES`.

    Args:
        model_type: ``config.json`` ``model_type`` of the base.
        module: Module path (``transformer.h.0.attn.c_attn``).
    """
    return module.rpartition(".")[2] in CONV1D_MODULES.get(str(model_type), frozenset())


# --------------------------------------------------------------------------- header layout


@dataclass(frozen=True)
class LoraModule:
    """One LoRA-patched module of an adapter, read from the header only.

    Attributes:
        module: Normalized module path in the adapter's own naming.
        kind: ``"linear"`` (``lora_A``/``lora_B``) or ``"embedding"`` (``lora_embedding_A/B``).
        a_key / b_key: Original tensor keys in ``adapter_model.safetensors``.
        a_shape: ``[r, in_features]`` (linear) or ``[r, num_embeddings]`` (embedding).
        b_shape: ``[out_features, r]`` (linear) or ``[embedding_dim, r]`` (embedding).
        magnitude_key: DoRA magnitude vector key, when present.
        bias_key: ``lora_B`` bias key (``lora_bias=True``), when present.
    """

    module: str
    kind: Literal["linear", "embedding"]
    a_key: str
    b_key: str
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    magnitude_key: str | None = None
    bias_key: str | None = None

    @property
    def rank(self) -> int:
        """The rank stored in the tensors (rows of A)."""
        return self.a_shape[0]

    @property
    def delta_shape(self) -> tuple[int, int]:
        """Shape of ΔW as ``nn.Linear``/``nn.Embedding`` store it: ``[out, in]`` or ``[num_embeddings, dim]``."""
        if self.kind == "embedding":
            return (self.a_shape[1], self.b_shape[0])
        return (self.b_shape[0], self.a_shape[1])

    def weight_shape(self, model_type: str | None, target: str) -> tuple[int, int]:
        """The shape of the base weight ΔW adds to: :attr:`delta_shape`, transposed for a ``Conv1D``.

        Args:
            model_type: ``config.json`` ``model_type`` of the base.
            target: The base module ΔW lands on (decides fan_in_fan_out, :func:`fan_in_fan_out`).
        """
        want = self.delta_shape
        if self.kind == "linear" and fan_in_fan_out(model_type, target):
            return (want[1], want[0])
        return want

    @property
    def slots(self) -> dict[str, str]:
        """Canonical slot -> stored key, for every tensor of this module."""
        a, b = ("lora_embedding_A", "lora_embedding_B") if self.kind == "embedding" else ("lora_A", "lora_B")
        out = {a: self.a_key, b: self.b_key}
        if self.bias_key is not None:
            out["lora_B.bias"] = self.bias_key
        if self.magnitude_key is not None:
            out["lora_magnitude_vector"] = self.magnitude_key
        return out


@dataclass(frozen=True)
class SavedTensor:
    """A full tensor the adapter stores for a ``modules_to_save`` module (e.g. ``embed_tokens``).

    Attributes:
        name: Normalized tensor name, e.g. ``model.embed_tokens.weight``.
        key: Original key in the adapter file.
        shape / dtype: From the header (safetensors dtype name).
    """

    name: str
    key: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class AdapterLayout:
    """Everything the adapter file's header says, normalized (see :func:`parse_adapter_header`).

    Attributes:
        path: The ``adapter_model.safetensors`` file.
        lora: Normalized module path -> :class:`LoraModule`.
        saved: Normalized tensor name -> :class:`SavedTensor` (``modules_to_save``).
        unknown: Keys that are neither LoRA factors nor full tensors we understand.
        incomplete: Module paths with an A but no B, or the other way round.
        dora: Module paths carrying a DoRA magnitude vector.
        prefixed: Number of keys that carried ``base_model.model.``.
        infixed: Number of keys that carried an adapter-name infix (``.default``).
        adapter_names: Adapter-name infixes seen (``{"default"}``).
        base_copies: Keys holding a copy of the *old* base's weight (``<module>.base_layer.weight``,
            written by peft's ``save_embedding_layers``); porting drops them so the new base's
            weights are used (W_new + ΔW).
        keys: Every key of the file, parsed, in file order.
    """

    path: Path
    lora: dict[str, LoraModule] = field(default_factory=dict)
    saved: dict[str, SavedTensor] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    dora: list[str] = field(default_factory=list)
    prefixed: int = 0
    infixed: int = 0
    adapter_names: set[str] = field(default_factory=set)
    base_copies: list[str] = field(default_factory=list)
    keys: list[AdapterKey] = field(default_factory=list)

    @property
    def canonical(self) -> bool:
        """Every key is already in peft's canonical saved form (prefix, no infix, nothing dropped)."""
        return self.infixed == 0 and not self.base_copies and self.prefixed == len(self.keys)


def parse_adapter_header(header: Mapping[str, Any], path: Path) -> AdapterLayout:
    """Classify every key of an adapter header with :func:`parse_key`.

    Args:
        header: Key -> an object with ``name``, ``shape`` and ``dtype`` (:class:`portllm_edge.tensorio.TensorInfo`).
        path: The file, for messages.
    """
    layout = AdapterLayout(path=path)
    parts: dict[str, dict[str, Any]] = {}
    for key, info in header.items():
        k = parse_key(key)
        layout.keys.append(k)
        layout.prefixed += int(k.prefixed)
        if k.adapter_name is not None:
            layout.infixed += 1
            layout.adapter_names.add(k.adapter_name)
        if k.kind == "lora":
            parts.setdefault(k.module, {})[k.slot] = info
        elif k.kind == "saved":
            layout.saved[k.tensor_name] = SavedTensor(k.tensor_name, key, tuple(info.shape), info.dtype)
        elif k.kind == "base_copy":
            layout.base_copies.append(key)
        else:
            layout.unknown.append(key)
    for module, slots in sorted(parts.items()):
        if "lora_magnitude_vector" in slots:
            layout.dora.append(module)
        if "lora_A" in slots and "lora_B" in slots:
            kind: Literal["linear", "embedding"] = "linear"
            a, b = slots["lora_A"], slots["lora_B"]
        elif "lora_embedding_A" in slots and "lora_embedding_B" in slots:
            kind = "embedding"
            a, b = slots["lora_embedding_A"], slots["lora_embedding_B"]
        else:
            layout.incomplete.append(module)
            continue
        mag, bias = slots.get("lora_magnitude_vector"), slots.get("lora_B.bias")
        layout.lora[module] = LoraModule(
            module,
            kind,
            a.name,
            b.name,
            tuple(a.shape),
            tuple(b.shape),
            magnitude_key=None if mag is None else mag.name,
            bias_key=None if bias is None else bias.name,
        )
    return layout


def adapter_weights_file(adapter_dir: str | Path) -> Path:
    """Return ``adapter_dir/adapter_model.safetensors``.

    Raises:
        PatchError: the folder is missing or is a file, the weights file is missing,
            or only pickled weights (``adapter_model.bin``) exist (refused, with how to convert).
    """
    from portllm_edge import tensorio

    d = Path(adapter_dir)
    if not d.exists():
        raise PatchError(f"{d}: adapter folder not found", hint="check the path")
    if not d.is_dir():
        raise PatchError(
            f"{d}: is a file, not an adapter folder",
            hint="point to the folder that holds adapter_config.json and adapter_model.safetensors",
        )
    weights = d / WEIGHTS_NAME
    if weights.is_file():
        return weights
    pickled = [d / n for n in PICKLED_WEIGHTS_NAMES if (d / n).is_file()]
    if pickled:
        raise PatchError(
            f"{d}: has only pickled weights ({pickled[0].name}); portllm-edge loads safetensors only, "
            "because unpickling can run arbitrary code",
            hint=tensorio.pickle_hint(d, "portllm-edge patch convert"),
        )
    raise PatchError(
        f"{d}: no {WEIGHTS_NAME} in the adapter folder",
        hint="copy the adapter's weights file next to adapter_config.json, or re-save the adapter with "
        "peft's `save_pretrained`",
    )


def read_adapter_layout(adapter_dir: str | Path) -> AdapterLayout:
    """Read and classify ``adapter_model.safetensors``'s header (no tensor data).

    Raises:
        PatchError: the weights file is missing, pickled or has an invalid header.
    """
    from portllm_edge import tensorio

    path = adapter_weights_file(adapter_dir)
    return parse_adapter_header(tensorio.read_safetensors_header(path, error_cls=PatchError), path)


# --------------------------------------------------------------------------- wrapper prefixes

WRAPPER = "language_model"


def wrapper_variants(module: str) -> list[tuple[str, str | None]]:
    """Candidate base module paths for an adapter module path, with the rewrite each applies.

    The first candidate is the path itself. Then the multimodal ``language_model.``
    wrapper is removed (``model.language_model.X`` -> ``model.X``,
    ``language_model.model.X`` -> ``model.X``, ``language_model.X`` -> ``X``) or added
    (``model.X`` -> ``model.language_model.X`` / ``language_model.model.X``).
    """
    out: list[tuple[str, str | None]] = [(module, None)]
    removed, added = f"removed `{WRAPPER}.` wrapper", f"added `{WRAPPER}.` wrapper"
    if module.startswith(f"model.{WRAPPER}."):
        out.append(("model." + module[len(f"model.{WRAPPER}.") :], removed))
    if module.startswith(f"{WRAPPER}.model."):
        out.append(("model." + module[len(f"{WRAPPER}.model.") :], removed))
    elif module.startswith(f"{WRAPPER}."):
        out.append((module[len(f"{WRAPPER}.") :], removed))
    if module.startswith("model.") and not module.startswith(f"model.{WRAPPER}."):
        rest = module[len("model.") :]
        out.append((f"model.{WRAPPER}.{rest}", added))
        out.append((f"{WRAPPER}.model.{rest}", added))
    elif not module.startswith(("model.", f"{WRAPPER}.")):
        out.append((f"{WRAPPER}.{module}", added))
    return out


def resolve_module(module: str, base_modules: Container[str]) -> tuple[str | None, str | None]:
    """Map an adapter module path onto a base module path.

    Args:
        module: Normalized adapter module path, e.g. ``model.layers.0.self_attn.q_proj``.
        base_modules: The base's module paths (anything supporting ``in``).

    Returns:
        ``(base_module, rewrite)``: the matching base path (``None`` when nothing
        matches) and a description of the wrapper rewrite applied (``None`` for
        an exact match).
    """
    for candidate, rewrite in wrapper_variants(module):
        if candidate in base_modules:
            return candidate, rewrite
    return None, None


__all__ = [
    "CONFIG_NAME",
    "CONV1D_MODULES",
    "DEFAULT_ADAPTER_NAME",
    "LORA_PARTS",
    "NON_ADDITIVE_INITS",
    "PEFT_PREFIX",
    "PICKLED_WEIGHTS_NAMES",
    "WEIGHTS_NAME",
    "WRAPPER",
    "AdapterConfig",
    "AdapterKey",
    "AdapterLayout",
    "LoraModule",
    "SavedTensor",
    "adapter_weights_file",
    "canonical_key",
    "fan_in_fan_out",
    "known_lora_config_keys",
    "lora_scale",
    "model_state_keys",
    "parse_adapter_header",
    "parse_key",
    "pattern_key",
    "peft_selects",
    "read_adapter_layout",
    "resolve_module",
    "wrapper_variants",
]
