"""microqwen: Qwen2.5-0.5B inference in pure Python, every step visible.

The modules follow the data, in the order a token meets them:
`bf16`, `jsonparse`, `safetensors`, `config` (the files), then the tokenizer,
the model and the sampler.
"""

from __future__ import annotations

from .errors import MicroQwenError

__version__ = "0.1.0"

__all__ = ["MicroQwenError", "__version__"]
