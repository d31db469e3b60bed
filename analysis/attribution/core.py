"""Node attribution: how much each MLP neuron at each position moves the metric.

Metric ``m = logit[A] - logit[B]`` at the last position (or ``logit[A]`` when B is None),
computed from the final residual with only the one or two unembedding rows it needs.

Methods (influence ``I`` in logit units, one value per (layer, position, neuron)):

``grad_x_act``
    ``I = a * dm/da`` with ordinary autograd. One forward, one backward.
``relp``
    Same product through the RelP-linearised backward (Arora et al. 2025): gate
    nonlinearity -> frozen ratio ``act(x)/x``, gate*up -> gradient split half/half, norms
    with frozen scale, attention patterns frozen (queries/keys detached), final logit
    soft-cap with frozen ratio. Forward values are unchanged. Because every linearised
    piece is degree-1 homogeneous, the relevance of the input embeddings,
    ``sum(e * grad_e)``, equals ``m`` exactly in bias-free models (Llama, Gemma, Qwen3);
    it is reported as ``Completeness.embedding_sum``.
``integrated_gradients``
    IG on per-neuron multipliers, all moved together: every MLP activation at every
    layer and position is replaced by ``b + alpha * (a - b)`` while the network still
    runs (later activations are recomputed from the modified residual), with ``b`` the
    baseline activation. Then ``I_v = ∫_0^1 (a_v(alpha) - b_v) * dF/dâ_v dalpha`` and, by
    the fundamental theorem, ``sum(I) = m - m0`` exactly, where ``m0`` (reported as
    ``Completeness.baseline``) is the metric with every activation at its baseline.
    Baselines: ``zero`` (neuron off) or ``mean`` (each neuron's mean over the prompt's
    positions). ``auto`` picks ``zero`` except for families that normalise the MLP
    output before the residual add (Gemma's post-feed-forward RMSNorm): that norm is
    scale-invariant, so along the zero path the metric is flat for every alpha above
    ~1e-3 and jumps at 0 — no quadrature sees the jump and IG collapses to ~0; ``mean``
    avoids the singular point. The integral uses Gauss-Legendre nodes (exact for
    polynomials of degree 2k-1, fast on smooth paths); alphas are batched. Check
    ``Completeness.ratio``: it is the quadrature error made visible.

Sum of influences over *all* layers vs ``m``: for IG it equals ``m - m0``. For
``grad_x_act``/``relp`` the per-node values are total effects (paths through later MLPs
included), so summing over layers counts a multi-MLP path once per MLP it crosses;
``Completeness.ratio`` shows how far that is from ``m`` on the model at hand. Note that
with a post-MLP norm (Gemma) plain gradients see no change when a whole MLP output is
rescaled, so ``grad_x_act`` influences sum to exactly 0 per (layer, position); RelP's
frozen norm scale is what makes Gemma attributions add up.

Measured (CPU float32). Embedded Gemma-3-270M, seed prompt, m = -1.162:
relp: all-node sum -0.46 (0.40 of m), input relevance -1.1621 (= m to 1e-6);
grad_x_act: all-node sum +0.06 (post-norm effect above), grad x input -0.42;
integrated_gradients (mean baseline, m - m0 = +1.952): sum 1.86 / 2.70 / 2.05 / 2.00 /
1.952 at 4 / 8 / 16 / 32 / 64 steps (the path is not smooth enough for Gauss-Legendre to
converge fast; the zero baseline does not converge at all on Gemma, as explained above).
Tiny random 2-layer models (15 prompts each, median and range of all-node sum / m):
relp llama 1.10 [-0.85, 1.79], gemma3 0.67 [-4.7, 3.2], qwen3 1.42 [-8.9, 107],
gpt2 0.22 [-2.9, 2.4]; input relevance / m = 1.0000 for the three bias-free families,
0.73 (median) for GPT-2 whose biases hold relevance too.
"""

from __future__ import annotations

import dataclasses
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from analysis.attribution.adapters import ArchAdapter, get_adapter
from analysis.attribution.completeness import Completeness
from analysis.attribution.hooks import instrument
from analysis.attribution.linearize import upcast
from analysis.errors import InputError
from analysis.nnsight_traces import LastPosition, is_remote, remote_gradients

Method = str  # a name in METHODS
MAX_IG_STEPS = 512


@dataclass
class Attribution:
    """Dense attribution of one prompt; tensors are float32 on CPU, ``[L, T, N]``."""

    input_ids: list[int]
    target_a: int
    target_b: int | None
    method: str
    m: float
    logit_a: float
    logit_b: float | None
    prob_a: float | None
    prob_b: float | None
    influence: torch.Tensor
    activation: torch.Tensor
    completeness: Completeness
    tokens: list[str] | None = None
    ig_steps: int | None = None
    ig_baseline: str | None = None
    seconds: float = 0.0
    model_name: str | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.influence.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.influence.shape[1])

    @property
    def n_neurons(self) -> int:
        return int(self.influence.shape[2])

    def neuron_totals(self) -> torch.Tensor:
        """``[L, N]``: each neuron's influence summed over positions."""
        return self.influence.sum(dim=1)

    def token(self, position: int) -> str | None:
        return None if self.tokens is None else self.tokens[position]


# ---------------------------------------------------------------------------------------
# Validation shared by the public functions
# ---------------------------------------------------------------------------------------


def as_id_list(input_ids: Sequence[int] | torch.Tensor, vocab_size: int) -> list[int]:
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() == 2 and input_ids.shape[0] == 1:
            input_ids = input_ids[0]
        if input_ids.dim() != 1:
            raise InputError("input_ids must be one sequence of token ids", field="input_ids")
        ids = [int(i) for i in input_ids.tolist()]
    else:
        try:
            ids = [int(i) for i in input_ids]
        except (TypeError, ValueError) as exc:
            raise InputError("input_ids must be integers", field="input_ids") from exc
    if not ids:
        raise InputError("the prompt has no tokens", field="input_ids")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise InputError(
            f"token id {bad[0]} is outside the vocabulary (size {vocab_size})", field="input_ids"
        )
    return ids


def check_targets(target_a: int, target_b: int | None, vocab_size: int) -> None:
    for name, tok in (("target_a", target_a), ("target_b", target_b)):
        if tok is None and name == "target_b":
            continue
        try:  # ints, numpy ints and 0-d integer tensors; not bools or floats
            ok = not isinstance(tok, bool) and 0 <= operator.index(tok) < vocab_size  # type: ignore[arg-type]
        except TypeError:
            ok = False
        if not ok:
            raise InputError(
                f"{name} must be a token id in [0, {vocab_size}), got {tok!r}", field=name
            )
    if target_b is not None and target_a == target_b:
        raise InputError(
            "the two answers are the same token; a contrast needs two different tokens",
            field="target_b",
        )


def check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(
            f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}",
            field="method",
        )


# ---------------------------------------------------------------------------------------
# Metric
# ---------------------------------------------------------------------------------------


def metric_logits(
    adapter: ArchAdapter,
    hidden_last: torch.Tensor,
    target_a: int,
    target_b: int | None,
    *,
    linearize: bool = False,
) -> torch.Tensor:
    """Logits of A (and B) from the final-normed residual ``[batch, d]`` -> ``[batch, k]``.

    Computed in float32 from only the rows needed (a full-vocabulary projection would
    dominate the cost for large vocabularies such as Gemma's 262k)."""
    rows = [target_a] if target_b is None else [target_a, target_b]
    weight = adapter.unembedding()
    idx = torch.tensor(rows, device=weight.device)
    w = upcast(weight.index_select(0, idx).to(hidden_last.device))
    z = upcast(hidden_last) @ w.T.to(upcast(hidden_last).dtype)
    bias = adapter.unembedding_bias()
    if bias is not None:
        z = z + bias.index_select(0, idx.to(bias.device)).to(z.device, z.dtype)
    cap = adapter.logit_softcap()
    if cap is not None:
        capped = torch.tanh(z / cap) * cap
        if linearize:
            # RelP: the soft-cap's frozen ratio tanh(z/c)c/z, value unchanged.
            with torch.no_grad():
                safe = z.abs() > 1e-6
                ratio = torch.where(safe, capped / torch.where(safe, z, 1.0), 1.0)
            z = capped.detach() + (z - z.detach()) * ratio
        else:
            z = capped
    return z


def metric_from_logits(z: torch.Tensor) -> torch.Tensor:
    return z[:, 0] - z[:, 1] if z.shape[1] == 2 else z[:, 0]


def full_last_logits(adapter: ArchAdapter, hidden_last: torch.Tensor) -> torch.Tensor:
    """All-vocabulary logits at the last position (float32), soft-cap applied."""
    head = adapter.model.get_output_embeddings()
    z = upcast(head(hidden_last.to(head.weight.device)))
    cap = adapter.logit_softcap()
    return torch.tanh(z / cap) * cap if cap is not None else z


def last_metric_logits(adapter: ArchAdapter, last: LastPosition, target_a: int,
                       target_b: int | None) -> torch.Tensor:
    """Logits of A (and B) ``[rows, k]`` from a traced forward's last position, whether
    it ran here (the residual) or on NDIF (the logits, soft-cap already applied)."""
    if last.logits is None:
        assert last.hidden is not None
        return metric_logits(adapter, last.hidden, target_a, target_b)
    rows = [target_a] if target_b is None else [target_a, target_b]
    return upcast(last.logits[:, rows])


def last_full_logits(adapter: ArchAdapter, last: LastPosition) -> torch.Tensor:
    """All-vocabulary logits from a traced forward's last position (here or on NDIF)."""
    if last.logits is None:
        assert last.hidden is not None
        return full_last_logits(adapter, last.hidden)
    return upcast(last.logits)


# ---------------------------------------------------------------------------------------
# attribute()
# ---------------------------------------------------------------------------------------


def attribute(
    model: torch.nn.Module,
    tokenizer: object | None,
    input_ids: Sequence[int] | torch.Tensor,
    target_a: int,
    target_b: int | None = None,
    *,
    method: Method | str = "relp",
    ig_steps: int = 32,
    ig_batch_size: int = 16,
    ig_baseline: str = "auto",
) -> Attribution:
    """Influence of every MLP neuron at every position on ``m`` (see module docstring).

    ``tokenizer`` is optional and only used to label positions with their token text.
    """
    started = time.perf_counter()
    adapter = get_adapter(model)
    ids = as_id_list(input_ids, adapter.vocab_size)
    check_targets(target_a, target_b, adapter.vocab_size)
    target_a = operator.index(target_a)
    target_b = None if target_b is None else operator.index(target_b)
    check_method(method)
    spec = METHODS[method]
    remote = is_remote(model)
    if remote and spec.remote is None:
        raise InputError(
            f"method={method!r} does not run on NDIF: only {', '.join(remote_methods())} "
            "does (its backward is the model's own, served inside the remote trace); "
            "RelP's linearized backward and integrated gradients' scaled forwards need "
            "local weights. Use one of those or a local copy of the model.", field="method")
    options = MethodOptions(ig_steps=ig_steps, ig_batch_size=ig_batch_size,
                            ig_baseline=ig_baseline)
    if spec.check is not None:
        options = spec.check(adapter, options)
    uses_ig = "ig_steps" in spec.settings

    ids_t = torch.tensor([ids], device=adapter.input_device)
    if remote:
        assert spec.remote is not None
        influence, activation, z, extra = spec.remote(adapter, ids, target_a, target_b)
    else:
        influence, activation, z, extra = spec.run(adapter, ids_t, target_a, target_b, options)
    m = float(metric_from_logits(z)[0])
    total = float(influence.sum())
    baseline = extra.get("baseline")
    target = m - baseline if baseline is not None else m
    completeness = Completeness(
        m=m,
        influence_sum=total,
        target=target,
        ratio=total / target if abs(target) > 1e-9 else None,
        baseline=baseline,
        baseline_kind=options.ig_baseline if uses_ig else None,  # type: ignore[arg-type]
        embedding_sum=extra.get("embedding_sum"),
        layer_sums=[float(v) for v in influence.sum(dim=(1, 2))],
    )
    return Attribution(
        input_ids=ids,
        target_a=target_a,
        target_b=target_b,
        method=str(method),
        m=m,
        logit_a=float(z[0, 0]),
        logit_b=float(z[0, 1]) if target_b is not None else None,
        prob_a=extra.get("prob_a"),
        prob_b=extra.get("prob_b"),
        influence=influence,
        activation=activation,
        completeness=completeness,
        tokens=decode_tokens(tokenizer, ids),
        ig_steps=options.ig_steps if uses_ig else None,
        ig_baseline=options.ig_baseline if uses_ig else None,
        seconds=time.perf_counter() - started,
        model_name=getattr(model.config, "_name_or_path", None) or None,
        extra=extra,
    )


def decode_tokens(tokenizer: object | None, ids: Sequence[int]) -> list[str] | None:
    if tokenizer is None:
        return None
    decode = getattr(tokenizer, "decode", None)
    if decode is None:
        return None
    return [str(decode([i])) for i in ids]


def _single_pass(
    adapter: ArchAdapter,
    ids: torch.Tensor,
    target_a: int,
    target_b: int | None,
    *,
    relp: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    acts: list[torch.Tensor | None] = [None] * adapter.n_layers

    def on_node(layer: int, h: torch.Tensor) -> None:
        acts[layer] = h

    with torch.enable_grad():
        # The embeddings are the only leaf: nothing upstream of them is differentiated.
        emb = adapter.embed(ids).detach().requires_grad_(True)
        with instrument(
            adapter,
            on_node=on_node,
            linearize="relp" if relp else None,
            freeze_qk=relp,
        ):
            hidden = adapter.hidden(emb)
            z = metric_logits(adapter, hidden[:, -1], target_a, target_b, linearize=relp)
        m = metric_from_logits(z)[0]
        captured = [a for a in acts if a is not None]
        if len(captured) != adapter.n_layers:
            raise RuntimeError("an MLP layer did not run; the adapter does not fit this model")
        grads = torch.autograd.grad(m, [*captured, emb])
    with torch.no_grad():
        influence = torch.stack(
            [(a * g)[0].float() for a, g in zip(captured, grads[:-1], strict=True)]
        )
        activation = torch.stack([a[0].float() for a in captured])
        emb_sum = float((emb * grads[-1]).sum())
        probs = full_last_logits(adapter, hidden[:, -1].detach()).softmax(-1)[0]
    extra = {"embedding_sum": emb_sum, **_answer_probs(probs, target_a, target_b)}
    return influence.cpu(), activation.cpu(), z.detach(), extra


def _remote_grad_x_act(
    adapter: ArchAdapter, ids: list[int], target_a: int, target_b: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """grad x act for a model on NDIF: one traced forward+backward runs there. RelP
    replaces the backward of every norm, attention pattern, gate and the soft-cap (local
    torch hooks on autograd), and IG runs many scaled forwards of embeddings built here;
    neither is expressed as a trace NDIF executes yet, so they register no remote pass."""
    got = remote_gradients(adapter, ids, target_a, target_b)
    influence = got.activation * got.gradient
    rows = [target_a] if target_b is None else [target_a, target_b]
    z = got.logits[rows].unsqueeze(0)
    probs = got.logits.softmax(-1)
    extra = {"embedding_sum": got.embedding_sum, **_answer_probs(probs, target_a, target_b)}
    return influence.cpu(), got.activation.cpu(), z, extra


def quadrature(steps: int) -> tuple[list[float], list[float]]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(steps)
    return [float(v) for v in (x + 1) / 2], [float(v) for v in w / 2]


def _integrated_gradients(
    adapter: ArchAdapter,
    ids: torch.Tensor,
    target_a: int,
    target_b: int | None,
    steps: int,
    batch_size: int,
    baseline: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    n_layers, seq = adapter.n_layers, ids.shape[1]
    emb = adapter.embed(ids).detach()
    base_acts: list[torch.Tensor] | None = None
    if baseline == "mean":
        clean = capture_activations(adapter, ids)
        base_acts = [a.mean(dim=1, keepdim=True) for a in clean]

    alphas, weights = quadrature(steps)
    # Two extra rows with zero weight give the path's end points: m (alpha=1, also the
    # clean activations) and m0 (alpha=0).
    alphas += [1.0, 0.0]
    weights += [0.0, 0.0]
    influence: torch.Tensor | None = None
    activation: torch.Tensor | None = None
    z_clean = z_base = None
    extra: dict[str, float] = {}
    for start in range(0, len(alphas), batch_size):
        a_chunk = alphas[start : start + batch_size]
        w_chunk = torch.tensor(weights[start : start + batch_size])
        rows = len(a_chunk)
        raw: list[torch.Tensor] = []
        delta: list[torch.Tensor] = []
        patched: list[torch.Tensor] = []

        def on_node(
            layer: int,
            h: torch.Tensor,
            a_chunk: list[float] = a_chunk,
            raw: list[torch.Tensor] = raw,
            delta: list[torch.Tensor] = delta,
            patched: list[torch.Tensor] = patched,
        ) -> torch.Tensor:
            alpha = torch.tensor(a_chunk, device=h.device, dtype=h.dtype).view(-1, 1, 1)
            b = None if base_acts is None else base_acts[layer].to(h.device, h.dtype)
            d = h if b is None else h - b
            s = alpha * d if b is None else b + alpha * d
            if not s.requires_grad:  # first layer: nothing upstream needs a gradient
                s.requires_grad_(True)
            raw.append(h)
            delta.append(d)
            patched.append(s)
            return s

        with torch.enable_grad():
            with instrument(adapter, on_node=on_node):
                hidden = adapter.hidden(emb.expand(rows, seq, -1))
                z = metric_logits(adapter, hidden[:, -1], target_a, target_b)
            if len(patched) != n_layers:
                raise RuntimeError("an MLP layer did not run; the adapter does not fit this model")
            grads = torch.autograd.grad(metric_from_logits(z).sum(), patched)
        with torch.no_grad():
            chunk = torch.stack(
                [
                    torch.einsum("b,btn->tn", w_chunk.to(g.device), (d * g).float())
                    for d, g in zip(delta, grads, strict=True)
                ]
            ).cpu()
            influence = chunk if influence is None else influence + chunk
            for row in range(rows):
                if start + row == len(alphas) - 2:  # alpha = 1
                    activation = torch.stack([h[row].float() for h in raw]).cpu()
                    z_clean = z[row : row + 1].detach()
                    probs = full_last_logits(adapter, hidden[row, -1:].detach()).softmax(-1)[0]
                    extra = _answer_probs(probs, target_a, target_b)
                elif start + row == len(alphas) - 1:  # alpha = 0
                    z_base = z[row : row + 1].detach()
    assert influence is not None and activation is not None
    assert z_clean is not None and z_base is not None
    m0 = float(metric_from_logits(z_base)[0])
    return influence, activation, z_clean, {"baseline": m0, **extra}


def _answer_probs(probs: torch.Tensor, target_a: int, target_b: int | None) -> dict[str, float]:
    out = {"prob_a": float(probs[target_a])}
    if target_b is not None:
        out["prob_b"] = float(probs[target_b])
    return out


def capture_activations(adapter: ArchAdapter, ids: torch.Tensor) -> list[torch.Tensor]:
    """Clean node activations ``[batch, seq, n_neurons]`` per layer (no gradients)."""
    acts: list[torch.Tensor] = []

    def on_node(layer: int, h: torch.Tensor) -> None:
        acts.append(h.detach())

    with torch.no_grad(), instrument(adapter, on_node=on_node):
        adapter.hidden(adapter.embed(ids))
    return acts


def resolve_ig_baseline(adapter: ArchAdapter, baseline: str) -> str:
    if baseline not in ("auto", "zero", "mean"):
        raise InputError("ig_baseline must be 'auto', 'zero' or 'mean'", field="ig_baseline")
    if baseline != "auto":
        return baseline
    return "mean" if adapter.output_gain(0) is not None else "zero"


# ---------------------------------------------------------------------------------------
# The methods, each declared once
# ---------------------------------------------------------------------------------------

PassResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]


@dataclass(frozen=True)
class MethodOptions:
    """The settings a method may read (each method says which in ``settings``)."""

    ig_steps: int = 32
    ig_batch_size: int = 16
    ig_baseline: str = "auto"


@dataclass(frozen=True)
class AttributionMethod:
    """One attribution method: its name, what the forms and the CLI call it, one line on
    what it computes, the ``CircuitSettings`` fields only it reads (the others are reset
    for the cache key), how it checks them, and the pass that computes influence,
    activation, the metric logits and its extras (and, when it can, the pass for a model
    on NDIF). ``CircuitSettings``, the forms, the
    CLI and :func:`attribute` all read :data:`METHODS`: adding a method is one
    :func:`register` call."""

    name: str
    label: str
    summary: str
    run: Callable[[ArchAdapter, torch.Tensor, int, int | None, MethodOptions], PassResult]
    settings: tuple[str, ...] = ()
    check: Callable[[ArchAdapter, MethodOptions], MethodOptions] | None = None
    # The pass for a model on NDIF (token ids in, one remote trace); None: refused there.
    remote: Callable[[ArchAdapter, list[int], int, int | None], PassResult] | None = None


METHODS: dict[str, AttributionMethod] = {}


def remote_methods() -> list[str]:
    """The methods that run on NDIF (they register a remote pass)."""
    return [name for name, m in METHODS.items() if m.remote is not None]


def register(method: AttributionMethod) -> AttributionMethod:
    if method.name in METHODS:
        raise ValueError(f"attribution method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def _check_ig(adapter: ArchAdapter, options: MethodOptions) -> MethodOptions:
    if not isinstance(options.ig_steps, int) or not 1 <= options.ig_steps <= MAX_IG_STEPS:
        raise InputError(f"ig_steps must be in [1, {MAX_IG_STEPS}]", field="ig_steps")
    if not isinstance(options.ig_batch_size, int) or options.ig_batch_size < 1:
        raise InputError("ig_batch_size must be >= 1", field="ig_batch_size")
    return dataclasses.replace(options,
                               ig_baseline=resolve_ig_baseline(adapter, options.ig_baseline))


register(AttributionMethod(
    name="relp", label="RelP (linearised)",
    summary="activation x gradient through the RelP-linearised backward (the default)",
    run=lambda adapter, ids, a, b, _: _single_pass(adapter, ids, a, b, relp=True)))
register(AttributionMethod(
    name="grad_x_act", label="activation × gradient",
    summary="activation x gradient with ordinary autograd (also on NDIF)",
    run=lambda adapter, ids, a, b, _: _single_pass(adapter, ids, a, b, relp=False),
    remote=_remote_grad_x_act))
register(AttributionMethod(
    name="integrated_gradients", label="integrated gradients",
    summary="integrated gradients over every MLP activation together (ig_steps, "
            "ig_baseline)",
    settings=("ig_steps", "ig_baseline"), check=_check_ig,
    run=lambda adapter, ids, a, b, o: _integrated_gradients(
        adapter, ids, a, b, o.ig_steps, o.ig_batch_size, o.ig_baseline)))
