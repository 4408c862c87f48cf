"""The evaluation result record: what one run of one task on one model configuration measured.

Why this module exists: results travel from scoring to the CLI, the run history
(SQLite, JSON) and the reports. A small frozen dataclass with a lossless
``to_dict``/``from_dict`` round trip keeps every consumer on one shape. It must not
import torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from portllm_edge.evaluation.metrics import binary_f1, wilson_interval


@dataclass(frozen=True)
class Prediction:
    """One scored example.

    Attributes:
        id: Example id from the file.
        predicted: Predicted choice index (classification) or extracted answer (GSM8K; ``None`` when
            the output holds no number).
        gold: Gold choice index or gold answer.
        correct: Whether ``predicted`` matches ``gold``.
        scores: Per-choice log-likelihood (nats; length-normalized when asked), or ``None``.
        output: Generated text (GSM8K), or ``None``.
        predicted_norm: Choice picked by the harness's ``acc_norm`` rule (log-likelihood per
            character of the choice), or ``None`` (generation).
        correct_strict: GSM8K: correct under lm-eval's "strict-match" filter; else ``None``.
    """

    id: str
    predicted: int | str | None
    gold: int | str
    correct: bool
    scores: tuple[float, ...] | None = None
    output: str | None = None
    predicted_norm: int | None = None
    correct_strict: bool | None = None


@dataclass(frozen=True)
class EvalResult:
    """Accuracy (and F1 where the task reports it) of one model configuration on one task.

    Attributes:
        task: Task name (``"mrpc"``).
        n: Number of examples scored.
        correct: Number scored correct.
        accuracy: ``correct / n``.
        ci_low: Lower end of the 95 % Wilson interval of the accuracy.
        ci_high: Upper end of the 95 % Wilson interval.
        f1: Binary F1 of the positive class (MRPC), else ``None``.
        acc_norm: Fraction correct under the harness's ``acc_norm`` rule (choice tasks), else ``None``.
        strict_match: GSM8K: fraction correct under lm-eval's "strict-match" filter, else ``None``.
        seconds: Wall time of scoring, in seconds (model loading excluded).
        tokens: Tokens the model processed: non-padding input tokens plus generated tokens.
        tokens_per_s: ``tokens / seconds``, or ``None`` when ``seconds`` is 0.
        options: Scoring options (batch size, normalization, max new tokens, ...).
        predictions: Per-example predictions when asked for, else ``None``.
    """

    task: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    f1: float | None
    seconds: float
    tokens: int
    tokens_per_s: float | None
    options: dict[str, Any] = field(default_factory=dict)
    predictions: tuple[Prediction, ...] | None = None
    acc_norm: float | None = None
    strict_match: float | None = None

    @classmethod
    def from_predictions(
        cls,
        task: str,
        predictions: list[Prediction],
        *,
        seconds: float,
        tokens: int,
        positive: int | None = None,
        options: dict[str, Any] | None = None,
        keep_predictions: bool = False,
    ) -> EvalResult:
        """Compute the metrics from per-example predictions.

        Args:
            task: Task name.
            predictions: One per example (at least one).
            seconds: Scoring wall time.
            tokens: Tokens processed.
            positive: Positive choice index for F1, or ``None`` for no F1.
            options: Scoring options to record.
            keep_predictions: Keep ``predictions`` in the record.

        Raises:
            ValueError: ``predictions`` is empty.
        """
        n = len(predictions)
        if n == 0:
            raise ValueError("cannot summarize an evaluation of zero examples")
        correct = sum(p.correct for p in predictions)
        low, high = wilson_interval(correct, n)
        f1 = None
        if positive is not None:
            f1 = binary_f1([p.predicted for p in predictions], [p.gold for p in predictions], positive)
        normed = [p.predicted_norm for p in predictions]
        acc_norm = None
        if all(x is not None for x in normed):
            acc_norm = sum(x == p.gold for x, p in zip(normed, predictions, strict=True)) / n
        strict = [p.correct_strict for p in predictions]
        return cls(
            acc_norm=acc_norm,
            strict_match=sum(map(bool, strict)) / n if all(x is not None for x in strict) else None,
            task=task,
            n=n,
            correct=correct,
            accuracy=correct / n,
            ci_low=low,
            ci_high=high,
            f1=f1,
            seconds=seconds,
            tokens=tokens,
            tokens_per_s=(tokens / seconds) if seconds > 0 else None,
            options=dict(options or {}),
            predictions=tuple(predictions) if keep_predictions else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (predictions as a list of dicts, or ``None``)."""
        d = asdict(self)
        if self.predictions is not None:
            d["predictions"] = [asdict(p) for p in self.predictions]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (records written by newer versions)."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        preds = kwargs.get("predictions")
        if preds is not None:
            pfields = set(Prediction.__dataclass_fields__)
            kwargs["predictions"] = tuple(
                Prediction(
                    **{
                        **{k: v for k, v in p.items() if k in pfields},
                        "scores": tuple(p["scores"]) if p.get("scores") is not None else None,
                    }
                )
                for p in preds
            )
        return cls(**kwargs)

    def summary(self) -> str:
        """One line: ``mrpc: accuracy 0.684 (95% CI 0.637-0.728, n=408), acc_norm 0.684, F1 0.812``."""
        line = f"{self.task}: accuracy {self.accuracy:.3f} (95% CI {self.ci_low:.3f}-{self.ci_high:.3f}, n={self.n})"
        if self.acc_norm is not None:
            line += f", acc_norm {self.acc_norm:.3f}"
        if self.strict_match is not None:
            line += f", strict-match {self.strict_match:.3f}"
        if self.f1 is not None:
            line += f", F1 {self.f1:.3f}"
        return line
