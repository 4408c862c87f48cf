"""Step 2, fail before work: every check that needs no weights, run before any model loads.

Name collisions in the patch store, free disk space, the evaluation file and template,
the merge target and the precision. The compatibility preflight itself is
:func:`portllm_edge.porting.port.checked_adapter`. Nothing here imports torch except
:func:`check_precision` (which asks torch which device the load will use).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portllm_edge.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from portllm_edge.models.refs import ResolvedBase
    from portllm_edge.workflow.types import EvalSpec

DISK_MARGIN_BYTES = 64 * 2**20
"""Free space kept on top of what a write needs, bytes."""


def check_port_name_options(name: str | None, *, save: bool) -> None:
    """Refuse a ported patch name that would be ignored: empty, or given with ``save=False``.

    Raises:
        ConfigError: ``name`` is empty or blank (it used to fall back to the default silently),
            or ``name`` is given while nothing is stored (``--no-save``).
    """
    if name is not None and not name.strip():
        raise ConfigError(
            "`--name` is empty; the ported patch needs a store name.",
            hint="pass --name NEW, or leave --name out for the default `<patch>@<new base>`",
        )
    if name is not None and not save:
        raise ConfigError(
            f"`--name {name}` names the stored port, but `--no-save` stores nothing.",
            hint="drop --no-save to store the port under that name, or drop --name",
        )


def check_new_patch_name(name: str, *, overwrite: bool, source: str | None = None) -> None:
    """Refuse a patch store name that is invalid, taken (unless ``overwrite``), or the ``source`` patch's own.

    ``source`` is the store name of the patch being ported: replacing it would lose the
    patch for its old base, so ``overwrite`` does not allow it.

    Raises:
        StoreError: the name is taken, with the ``--overwrite`` / ``--name`` fix, or it is ``source``.
        PatchError: the name is not a valid store name.
    """
    from portllm_edge.patches import PatchStore, validate_name

    validate_name(name)
    if source is not None and name == source:
        raise StoreError(
            f"--name {name!r} is the patch being ported; storing the port under it would replace "
            "the patch for its old base. Nothing was loaded.",
            hint="pass --name NEW (or leave --name out for the default `<patch>@<new base>`)",
        )
    if not overwrite and name in PatchStore().names():
        raise StoreError(
            f"patch store already has {name!r}; nothing was loaded.",
            hint="pass --overwrite to replace it, or --name NEW to store the port under another name",
        )


def check_free_space(folder: Path, need_bytes: int, what: str) -> None:
    """Refuse a write of ``need_bytes`` (+ a 64 MiB margin) into ``folder``'s file system when it has less free.

    Raises:
        StoreError: not enough free space, with the numbers.
    """
    from portllm_edge.hardware.sizes import format_size

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need_bytes + DISK_MARGIN_BYTES:
        raise StoreError(
            f"{what} needs about {format_size(need_bytes)} in {folder}, but only {format_size(free)} is free.",
            hint="free some disk space (e.g. `portllm-edge patch remove NAME`), or write elsewhere",
        )


def adapter_bytes(adapter_dir: Path) -> int:
    """Size of an adapter's files, bytes."""
    return sum(f.stat().st_size for f in adapter_dir.iterdir() if f.is_file())


def merged_model_bytes(base_dir: Path, dtype: str) -> int:
    """Upper bound of a merged model's size: the base's safetensors bytes, doubled for fp32 output."""
    size = sum(f.stat().st_size for f in base_dir.glob("*.safetensors"))
    return size * (2 if dtype == "fp32" else 1)


def check_eval_spec(spec: EvalSpec) -> Any:
    """Read the evaluation file and check the template and label words; returns the loaded task data.

    Raises:
        DataError, ConfigError: a missing or malformed file, an unknown task, a bad template.
    """
    from portllm_edge.evaluation.tasks import LoadOptions, load_task

    options = LoadOptions(template=spec.template, verbalizers=spec.verbalizers)
    return load_task(
        spec.task,
        spec.data,
        limit=spec.limit,
        seed=spec.seed,
        options=options,
        num_fewshot=spec.num_fewshot,
        fewshot_data=spec.fewshot_data,
    )


def check_precision(precision: str, device: str | None, base: ResolvedBase | None = None) -> str:
    """Validate ``precision`` for the device the load will use; returns the concrete precision.

    ``auto`` is the planner's choice for ``base`` on that device (see
    :func:`portllm_edge.porting.load.resolve_precision`).

    Raises:
        ConfigError: an unknown precision, or a quantized one without bitsandbytes.
    """
    from portllm_edge.porting.load import default_device, resolve_precision

    return resolve_precision(precision, device or default_device(), base)


def check_eval_pair(task: str | None, data: object | None) -> None:
    """``--eval-task`` and ``--eval-data`` come together.

    Raises:
        ConfigError: one without the other.
    """
    if (task is None) != (data is None):
        raise ConfigError("`--eval-task` and `--eval-data` go together.", hint="pass both, or neither")
