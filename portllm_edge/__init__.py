"""portllm-edge: port fine-tuned LoRA patches onto updated base models, within a memory budget.

The headless core. It never imports textual or any UI code; heavy libraries
(torch, transformers, peft, bitsandbytes) are imported inside the functions that
need them, so that ``probe`` and ``plan`` start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
