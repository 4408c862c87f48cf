"""portllm_edge.measure: isolated, repeatable peak-memory and time measurement of a job.

Each job runs in its own Python subprocess (``python -m portllm_edge.measure.worker``),
so one job's allocator state and cached pages can't leak into another's number.
"""

from __future__ import annotations

from portllm_edge.measure.isolated import MeasureResult, measure_job, median_and_spread

__all__ = ["MeasureResult", "measure_job", "median_and_spread"]
