"""The lab: change what the model computes, and see what changes.

Every experiment is a hook (`microqwen.model.Hook`) that replaces values on the way, and a
comparison with the run that had none. The modules, one idea each:

- `components`: the parts one can change, by name (`layers.3.self_attn.head.5`, `layers.3.self_attn`,
  `layers.3.mlp`), and the points and positions;
- `runs`: running one prompt again and again with different hooks, reusing the KV cache;
- `ablation`: switch components off (zero, or their mean), alone or every head in turn;
- `patching`: put a clean prompt's values into a corrupted prompt's run, point by point;
- `steering`: add a vector to the residual stream while generating;
- `attribution`: direct logit attribution, the logit split into one term per component;
- `scoring`: perplexity, as llama.cpp's `llama-perplexity` measures it;
- `precision`: every value rounded to float32 or bfloat16, and what that costs;
- `mutations`: the bugs ports make, planted by name.

The functions below return plain data (dataclasses of numbers, strings and lists; `to_json` makes
JSON of them), for the command line, a notebook or a web page:

```python
import microqwen
from microqwen import lab

model = microqwen.load("Qwen/Qwen2.5-0.5B-Instruct")
ids = model.tokenizer.encode("The capital of France is")
lab.ablate(model, ids, ["layers.20.self_attn.head.3"]).after          # the top tokens without that head
lab.patch_residual(model, ids, model.tokenizer.encode("The capital of Italy is")).restored
lab.direct_logit_attribution(model, ids, model.tokenizer.encode(" Paris")[0])
```
"""

from __future__ import annotations

from .ablation import Ablation, Sweep, ablate, ablation_sweep
from .attribution import Attribution, attribute, direct_logit_attribution
from .components import Component, parse_component
from .mutations import MUTATIONS
from .patching import Patching, patch_heads, patch_residual
from .precision import Precision, compare_precision
from .runs import Runs, to_json
from .scoring import Perplexity, perplexity
from .steering import Steering, difference_vector, steer

__all__ = [
    "MUTATIONS",
    "Ablation",
    "Attribution",
    "Component",
    "Patching",
    "Perplexity",
    "Precision",
    "Runs",
    "Steering",
    "Sweep",
    "ablate",
    "ablation_sweep",
    "attribute",
    "compare_precision",
    "difference_vector",
    "direct_logit_attribution",
    "parse_component",
    "patch_heads",
    "patch_residual",
    "perplexity",
    "steer",
    "to_json",
]
