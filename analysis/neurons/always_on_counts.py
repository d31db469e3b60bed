"""Always-on and massive-activation neurons, from an index's statistics.

Some neurons carry a large value at almost every token, or a huge one at the first
position (the attention-sink mechanism: 960 and 2,823 on a 30-layer Llama-family model
where typical activations are below 1). They dominate naive attributions without saying
anything about the prompt, so the seeds' tool drops them. Both rules compare a neuron
with its own layer's scale ``s`` (the RMS of the layer's activations over non-first
positions of the build's first batch, ``IndexMeta.thresholds``):

* **dense**: ``|a| > s`` at no less than ``DENSE_FRACTION`` of all tokens (a typical
  neuron exceeds its layer's RMS at a few percent of tokens);
* **first position**: the *mean* activation at the texts' first position is at least
  ``FIRST_POSITION_FACTOR`` times ``s`` in magnitude. A mean over thousands of different
  first tokens that large is a position effect, not a response to a token.

Calibration on SmolLM2-135M (WordNet glosses): the first-position ratio is below 30 for
all but a few neurons per model; the massive ones stand far out — L11/N1229 (mean 2,983
at the first position, 2,033x its layer's scale), L28/N678 (2,360; 1,408x), L11/N1487
(1,048; 714x) — followed by a dozen between 100x and 360x (L9/N200, L2/N90, L1/N83...).
The last layers' output neurons reach 20-60x at the first position while firing on
content elsewhere: 100x keeps them.
"""

from __future__ import annotations

import numpy as np

DENSE_FRACTION = 0.9
FIRST_POSITION_FACTOR = 100.0


def flags(n_large: np.ndarray, first_sum: np.ndarray, thresholds: np.ndarray,
          tokens: int, texts: int) -> tuple[np.ndarray, np.ndarray]:
    """(dense, first_position) boolean masks, shaped like ``n_large`` (``[L, N]`` or
    ``[N]`` with a scalar threshold)."""
    if tokens == 0 or texts == 0:
        empty = np.zeros(np.shape(n_large), dtype=bool)
        return empty, empty
    scale = np.asarray(thresholds, dtype=np.float64)
    if scale.ndim == 1 and np.ndim(n_large) == 2:
        scale = scale[:, None]
    dense = np.asarray(n_large) / tokens >= DENSE_FRACTION
    first_mean = np.asarray(first_sum) / texts
    first = np.abs(first_mean) >= FIRST_POSITION_FACTOR * scale
    return dense, first


def reason(dense: bool, first: bool, frac_large: float, first_mean: float,
           scale: float) -> str | None:
    parts = []
    if first:
        parts.append(f"massive at the first position: mean {first_mean:.4g} there, "
                     f"{abs(first_mean) / scale:.0f}x the layer's scale {scale:.3g} "
                     f"(rule: >= {FIRST_POSITION_FACTOR:g}x)")
    if dense:
        parts.append(f"large at almost every token: |a| > {scale:.3g} (the layer's scale) "
                     f"at {frac_large:.0%} of tokens (rule: >= {DENSE_FRACTION:.0%})")
    return "; ".join(parts) or None
