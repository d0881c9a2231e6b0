"""microqwen: Qwen2.5-0.5B inference in pure Python, every step visible.

```python
import microqwen

model = microqwen.load("Qwen/Qwen2.5-0.5B-Instruct", workers=1)   # a Hub id or a directory
ids = model.tokenizer.encode("The capital of France is")          # [785, 6722, 315, 9625, 374]
for token in microqwen.generate(model, ids, max_new_tokens=8):
    print(token.text, end="")
```

The modules follow the data, in the order a token meets them:

- getting the files: `hub` (the Hugging Face Hub and its cache);
- reading them: `bf16` (the number format), `jsonparse`, `safetensors`, `gguf` (llama.cpp's
  one-file format) and `quant` (its quantised block formats), `config`, `weights` (every tensor by
  its Hugging Face name);
- text to ids: `pretokenize`, `tokenizer`, `chat` (the chat template);
- ids to logits: `model` (the transformer, one token at a time, with hooks), `linear` (its
  linear layers), `kernels` (the matrix-vector loops), `shards` (a layer split among processes)
  and `workers` (the processes that run the shards);
- logits to text: `sampling`, `generation` (the loop, streaming, lookup decoding, a conversation),
  `promptcache` (the KV cache of earlier prompts, on disk);
- looking inside: `distribution` (log-probabilities, entropy, KL, rank), `trace` (every value, the
  logit lens), `compare` (against the reference), `report` (the HTML report), `explorer` (the
  browser page's views and experiments);
- changing it: `lab` (ablation, patching, steering, attribution, perplexity, precision, planted bugs);
- serving: `serve` (the HTTP server: the explorer page and an API) and `openai_api` (OpenAI's
  request and answer formats);
- the tools: `bench`, `inspect_model`, `cli`, and `errors` (the one exception type).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import MicroQwenError  # noqa: E402  (after __version__, which hub reads)
from .generation import Conversation, generate  # noqa: E402
from .model import Qwen2ForCausalLM, load  # noqa: E402
from .sampling import Sampler, SamplingParams  # noqa: E402
from .tokenizer import Tokenizer  # noqa: E402

__all__ = [
    "Conversation",
    "MicroQwenError",
    "Qwen2ForCausalLM",
    "Sampler",
    "SamplingParams",
    "Tokenizer",
    "__version__",
    "generate",
    "load",
]
