"""Patch health across K = 9 successive updates of SmolLM2-135M, and the data-free forecast's calibration.

v1 is the SmolLM2-135M-Instruct GGUF (imported as the demo does). v2 ... v10 are successive
continued-pretraining updates on the Gutenberg prose of ``../shared/data/gutenberg`` (read by
path), each trained from the previous version with more steps and a higher learning rate, so
the drift from v1 grows (``portllm-edge simulate-update --chain``, one recorded ``update`` run
per version): up to 1.5 % at v7, then 3.7 %, 7.5 % and 15 % at v8 ... v10 (v9 and v10 raise the
held-out perplexity of the prose: damaged updates). LoRA patches for SST-2, BoolQ, RTE and MRPC
are trained on v1 and ported onto every version; each port is a recorded ``compare`` run
(zero-shot, old + patch, ported; fp32; the same seeded examples), so ``portllm-edge report``
draws the patch-health chart from them. RTE's patch does not beat zero-shot on its dev rows, so
its recovered gain is noise: it is evaluated on v2 ... v7 only and left out of the calibration.
The table gives the recovered gain of each (version, task) with its 95 % paired bootstrap
interval. Finally the data-free forecast candidates are computed for every point and scored
against the measured recovered gain (Spearman, leave-one-task-out MAE of a line and of a
logistic curve, and the constant forecasts they must beat).

Everything is cached in ``--work`` (its own PORTLLM_EDGE_HOME: models, patches, runs.sqlite,
one JSON per evaluation and per feature), so the stages can run one at a time and resume:

    .venv/bin/python benchmarks/successive_updates.py updates     # v2..v10            (7 + 6 min)
    .venv/bin/python benchmarks/successive_updates.py patches     # 4 patches on v1    (17 min; MRPC 5)
    .venv/bin/python benchmarks/successive_updates.py eval v2 v3 v4 --tasks sst2,boolq,rte   # (6 min)
    .venv/bin/python benchmarks/successive_updates.py eval v5 v6 v7 --tasks sst2,boolq,rte   # (6-10 min)
    .venv/bin/python benchmarks/successive_updates.py eval v2 v3 v4 v5 v6 v7 --tasks mrpc    # (6.5 min)
    .venv/bin/python benchmarks/successive_updates.py eval v8 v9 v10 --tasks sst2,boolq,mrpc # (10 min)
    .venv/bin/python benchmarks/successive_updates.py features --tasks sst2,boolq,mrpc     # (4 min)
    .venv/bin/python benchmarks/successive_updates.py table       # the table + candidate scores
    .venv/bin/python benchmarks/successive_updates.py calibrate   # write the forecast's calibration file

(wall times measured on 2 shared CPU cores, 2026-12-01; about 75 minutes in all. A feature
takes 5-26 s per point; two cached ones recomputed with today's code gave the same values.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "portllm-successive-updates"

STAGES = [
    (6, 1e-5),
    (10, 3e-5),
    (16, 6e-5),
    (24, 1e-4),
    (32, 2e-4),
    (40, 4e-4),
    (40, 1e-3),
    (40, 2e-3),
    (40, 4e-3),
]
"""(steps, learning rate) of v2 ... v10: more steps and a higher rate in later versions. v2 ... v7
(drift up to 1.5 %) left every patch with nearly all its gain, so v8 ... v10 double the rate each
time (drift of several percent), to reach versions where the gain does decline."""
SEQ_LEN, BATCH = 128, 4
VERSIONS = [f"v{i + 2}" for i in range(len(STAGES))]
# task -> (train file, eval file, LoRA max_length, eval rows)
TASKS: dict[str, tuple[str, str, int, int]] = {
    "sst2": ("sst2/train.tsv", "sst2/dev.tsv", 64, 160),
    "boolq": ("boolq/val.jsonl", "boolq/val.jsonl", 192, 96),
    "rte": ("rte/train.tsv", "rte/dev.tsv", 192, 128),
    "mrpc": ("mrpc/train.tsv", "mrpc/dev.tsv", 128, 160),
}
LORA = {"r": 8, "lora_alpha": 16, "batch_size": 8, "lora_dropout": 0.0}
# task -> (optimizer steps, learning rate, training examples): 32 steps at 1e-3 left SST-2 at +2 points
# and BoolQ at +0 on the held-out slice, so they train longer (BoolQ's long passages cost most per step)
TRAIN = {"sst2": (96, 1e-3, 768), "boolq": (64, 2e-3, 512), "rte": (32, 1e-3, 256), "mrpc": (64, 1e-3, 512)}


def _setup(work: Path) -> None:
    os.environ["PORTLLM_EDGE_HOME"] = str(work / "home")


def _gguf() -> Path:
    env = os.environ.get("PORTLLM_EDGE_SMOLLM2_GGUF")
    return Path(env) if env else REPO / ".cache" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def v1_dir() -> Path:
    from portllm_edge.models.gguf import import_gguf

    return import_gguf(_gguf(), reuse=True)


def version_dir(work: Path, version: str) -> Path:
    return v1_dir() if version == "v1" else work / "chain" / version


def stage_updates(args: argparse.Namespace) -> None:
    from portllm_edge.workflow import UpdateChainRequest, update_chain

    corpus = args.shared / "data" / "gutenberg"
    req = UpdateChainRequest(
        str(v1_dir()), [str(corpus)], str(args.work / "chain"), STAGES, SEQ_LEN, BATCH, seed=0, reuse=True
    )
    t0 = time.perf_counter()
    for v in update_chain(req, progress=None):
        print(f"{v.version}: steps {v.steps} lr {v.learning_rate} drift-from-previous {v.mean_linear_drift}")
    print(f"updates: {time.perf_counter() - t0:.0f} s", flush=True)


def split_boolq(src: Path, out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Disjoint halves of BoolQ's validation file (it has no training split here); written once."""
    train, held = out / "boolq-train-half.jsonl", out / "boolq-eval-half.jsonl"
    if train.is_file() and held.is_file():
        return train, held
    rows = src.read_text(encoding="utf-8").splitlines()
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    half = len(rows) // 2
    out.mkdir(parents=True, exist_ok=True)
    train.write_text("\n".join(rows[i] for i in sorted(order[:half])) + "\n", encoding="utf-8")
    held.write_text("\n".join(rows[i] for i in sorted(order[half:])) + "\n", encoding="utf-8")
    return train, held


def task_files(args: argparse.Namespace, task: str) -> tuple[Path, Path]:
    train_rel, eval_rel, _, _ = TASKS[task]
    data = args.shared / "data"
    if task == "boolq":
        return split_boolq(data / train_rel, args.work / "boolq-split")
    return data / train_rel, data / eval_rel


def patch_name(task: str) -> str:
    return f"{task}-v1"


def stage_patches(args: argparse.Namespace) -> None:
    from portllm_edge.patches import PatchStore
    from portllm_edge.training.lora import LoraHyperparams
    from portllm_edge.workflow import TrainSpec, train

    for task in args.tasks:
        if patch_name(task) in PatchStore().names():
            print(f"[{task}] patch cached")
            continue
        t0 = time.perf_counter()
        train_file, _ = task_files(args, task)
        steps, lr, limit = TRAIN[task]
        hp = LoraHyperparams(**LORA, max_length=TASKS[task][2], max_steps=steps, learning_rate=lr)  # type: ignore[arg-type]
        out = train(TrainSpec(str(v1_dir()), task, train_file, patch_name(task), hp=hp, limit=limit))
        b, a = out.heldout_before, out.heldout_after
        print(
            f"[{task}] held-out {b.accuracy if b else float('nan'):.3f} -> {a.accuracy if a else float('nan'):.3f} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


def eval_path(work: Path, task: str, version: str) -> Path:
    return work / "evals" / f"{task}-{version}.json"


def stage_eval(args: argparse.Namespace) -> None:
    from portllm_edge.fsutil import atomic_write_json
    from portllm_edge.porting.compare import ROW_OLD_PATCH, CompareResult
    from portllm_edge.workflow import EvalSpec, compare

    for version in args.versions:
        for task in args.tasks:
            out = eval_path(args.work, task, version)
            if out.is_file():
                continue
            _, eval_file = task_files(args, task)
            known = {}
            for other in VERSIONS:  # old + patch is the same row for every version: score it once
                prev = eval_path(args.work, task, other)
                if prev.is_file():
                    row = CompareResult.from_dict(json.loads(prev.read_text())).row(ROW_OLD_PATCH)
                    known = {ROW_OLD_PATCH: row} if row is not None else {}
                    break
            t0 = time.perf_counter()
            res = compare(
                patch_name(task),
                old=str(v1_dir()),
                new=str(version_dir(args.work, version)),
                spec=EvalSpec(task, eval_file, limit=TASKS[task][3], batch_size=8),
                precision="fp32",
                reuse_rows=known,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out, res.to_dict())
            stats = res.paired()
            g = stats.recovered_gain if stats else None
            print(
                f"[{version} {task}] "
                + ", ".join(f"{r.config}: {r.accuracy:.3f}" for r in res.rows)
                + (f"; recovered gain {g.estimate:.2f} [{g.low:.2f}, {g.high:.2f}]" if g else "")
                + f" ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )


def feature_path(work: Path, task: str, version: str) -> Path:
    return work / "features" / f"{task}-{version}.json"


def stage_features(args: argparse.Namespace) -> None:
    from portllm_edge.forecast import candidate_features
    from portllm_edge.fsutil import atomic_write_json
    from portllm_edge.patches import PatchStore

    for task in args.tasks:  # task-major: the old base's effect on generic text is computed once per task
        for version in args.versions:
            out = feature_path(args.work, task, version)
            if out.is_file():
                continue
            t0 = time.perf_counter()
            adapter = PatchStore().get(patch_name(task)).adapter_dir
            feats = candidate_features(adapter, v1_dir(), version_dir(args.work, version))
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out, feats.to_dict())
            print(f"[{version} {task}] {feats.to_dict()} ({time.perf_counter() - t0:.0f} s)", flush=True)


def gain_of(res: Any) -> float:
    """old + patch − new base zero-shot accuracy: the patch's gain that a port can recover."""
    from portllm_edge.porting.compare import ROW_OLD_PATCH, ROW_ZERO_SHOT

    return float(res.row(ROW_OLD_PATCH).accuracy - res.row(ROW_ZERO_SHOT).accuracy)


def collect_points(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One dict per (version, task) with an evaluation: measured gain, interval and features (when computed)."""
    from portllm_edge.porting.compare import CompareResult

    points = []
    for version in VERSIONS:
        for task in TASKS:
            ev = eval_path(args.work, task, version)
            if not ev.is_file():
                continue
            res = CompareResult.from_dict(json.loads(ev.read_text()))
            stats = res.paired()
            g = stats.recovered_gain if stats else None
            fp = feature_path(args.work, task, version)
            points.append(
                {
                    "version": version,
                    "task": task,
                    "recovered_gain": g.estimate if g else None,
                    "low": g.low if g else None,
                    "high": g.high if g else None,
                    "rows": {r.config: r.accuracy for r in res.rows},
                    "gain": gain_of(res),
                    "n": res.rows[0].n,
                    "features": json.loads(fp.read_text()) if fp.is_file() else None,
                }
            )
    return points


def stage_table(args: argparse.Namespace) -> None:
    from portllm_edge.forecast.calibrate import score_baselines, score_candidates

    points = collect_points(args)
    print(
        "recovered gain per version (95% paired bootstrap interval); zero-shot / old+patch / ported accuracy"
    )
    print(f"{'version':<8} {'drift':>8} " + " ".join(f"{t:>34}" for t in TASKS))
    for version in VERSIONS:
        cells = []
        drift = None
        for task in TASKS:
            p = next((q for q in points if q["version"] == version and q["task"] == task), None)
            if p is None or p["recovered_gain"] is None:
                cells.append(f"{'n/a':>34}")
                continue
            if p["features"]:
                drift = p["features"].get("base_drift")
            r = p["rows"]
            acc = "/".join(f"{100 * r[k]:.0f}" for k in r)
            cells.append(f"{p['recovered_gain']:6.2f} [{p['low']:5.2f},{p['high']:5.2f}] {acc:>12}")
        ds = f"{100 * drift:7.2f}%" if drift is not None else f"{'':>8}"
        print(f"{version:<8} {ds} " + " ".join(cells))
    scored = [p for p in points if p["features"] and p["recovered_gain"] is not None]
    if len(scored) >= 6:
        print(json.dumps(score_candidates(scored), indent=2))
        print("constant forecasts (MAE):", json.dumps(score_baselines(scored)))
    (args.work / "points.json").write_text(json.dumps(points, indent=2))
    print(f"points: {args.work / 'points.json'}")


def stage_calibrate(args: argparse.Namespace) -> None:
    from portllm_edge.forecast.calibrate import fit_and_write

    points = [p for p in collect_points(args) if p["features"] and p["recovered_gain"] is not None]
    provenance = {
        "benchmark": "benchmarks/successive_updates.py",
        "base": "SmolLM2-135M-Instruct (GGUF Q4_1, imported)",
        "corpus": "shared/data/gutenberg",
        "stages": STAGES,
        "seq_len": SEQ_LEN,
        "batch_size": BATCH,
        "tasks": {t: {"eval_rows": v[3], "lora_max_length": v[2]} for t, v in TASKS.items()},
        "lora": LORA,
        "train": TRAIN,
        "precision": "fp32",
    }
    out = fit_and_write(points, provenance)
    print(f"calibration written to {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["updates", "patches", "eval", "features", "table", "calibrate"])
    ap.add_argument("versions", nargs="*", default=VERSIONS, help="versions for eval/features (default all)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    args.tasks = args.tasks.split(",")
    if not (args.shared / "data").is_dir():  # a worktree one level deeper than the main checkout
        args.shared = next(
            (p / "shared" for p in REPO.parents if (p / "shared" / "data").is_dir()), args.shared
        )
    args.work.mkdir(parents=True, exist_ok=True)
    _setup(args.work)
    stages = {
        "updates": stage_updates,
        "patches": stage_patches,
        "eval": stage_eval,
        "features": stage_features,
        "table": stage_table,
        "calibrate": stage_calibrate,
    }
    stages[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
