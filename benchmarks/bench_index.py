"""Exemplar indexing speed against the bare forward, in one process.

For each embedded model: the bare forward (the decoder stack, no hooks, no unembedding)
over exactly the batches indexing runs, in the same dtype, measured before and after
the index build (their mean is the baseline, which softens drift on a shared machine);
then ``build_index`` end to end (tokenizing, the pass, the snapshot). Prints tokens/s of
both and their ratio (target >= 0.7), the peak RSS, the index size on disk, and the
bf16-vs-fp32 comparison: bare-forward speed of each and how well bf16's exemplar
rankings agree with fp32's on the same texts.

    .venv/bin/python benchmarks/bench_index.py [--texts 600] [--models smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.embedded import EMBEDDED
from analysis.models import embedded_spec, load_model
from analysis.neurons.build import _Batch, plan_batches, tokenize
from analysis.neurons.corpus import Corpus, default_corpus
from analysis.neurons.index import IndexSettings, NeuronIndex, build_index


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_forward(model: torch.nn.Module, batches: list[_Batch]) -> float:
    """Tokens/s of the decoder stack alone over these batches."""
    base = model.model
    tokens = sum(b.n_tokens for b in batches)
    started = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            base(input_ids=b.input_ids, use_cache=False)
    return tokens / (time.perf_counter() - started)


def agreement(a: NeuronIndex, b: NeuronIndex, k: int = 10) -> tuple[float, float]:
    """(mean top-k overlap of exemplar positions, share of neurons with the same top-1)."""
    assert a.arrays is not None and b.arrays is not None
    ia, ib = np.asarray(a.arrays["top_idx"])[..., :k], np.asarray(b.arrays["top_idx"])[..., :k]
    flat_a, flat_b = ia.reshape(-1, k), ib.reshape(-1, k)
    overlap = np.mean([len(set(x) & set(y)) / k for x, y in zip(flat_a, flat_b, strict=True)])
    return float(overlap), float(np.mean(flat_a[:, 0] == flat_b[:, 0]))


def bench(name: str, corpus: Corpus, settings: IndexSettings, cache_dir: Path,
          agreement_texts: int) -> None:
    lm = load_model(embedded_spec(name), cache_dir)
    tokens, offsets = tokenize(lm, corpus, settings.max_len)
    sample = np.zeros(0, dtype=np.int32)
    pad = int(lm.tokenizer.pad_token_id or 0)
    batches = [_Batch(ids, tokens, offsets, sample, pad) for ids in plan_batches(offsets, settings)]
    n_tokens = int(offsets[-1])
    model = lm.model if settings.dtype == "float32" else copy.deepcopy(lm.model).to(
        getattr(torch, settings.dtype))
    print(f"\n== {name}: {len(corpus.texts)} texts, {n_tokens:,} tokens, {len(batches)} "
          f"batches, dtype {settings.dtype}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    rss_before = peak_rss_mb()
    bare_a = bare_forward(model, batches)
    with tempfile.TemporaryDirectory() as tmp:
        summary = build_index(lm, corpus, Path(tmp), settings)
        bare_b = bare_forward(model, batches)
        bare = (bare_a + bare_b) / 2
        print(f"bare forward   {bare:8.0f} tokens/s  (before {bare_a:.0f}, after {bare_b:.0f})")
        print(f"build_index    {summary.tokens_per_s:8.0f} tokens/s  end to end "
              f"({summary.seconds:.1f} s)")
        print(f"ratio          {summary.tokens_per_s / bare:8.2f}  (target >= 0.7)")
        print(f"index on disk  {summary.size_bytes / 1e6:8.1f} MB for {n_tokens:,} tokens")
        print(f"peak RSS       {peak_rss_mb():8.0f} MB (before the build: {rss_before:.0f} MB)")
        index = NeuronIndex.open(Path(tmp))
        flagged = sorted(index.always_on())
        print(f"always-on      {len(flagged)} neurons: "
              + ", ".join(f"L{la}/N{n}" for la, n in flagged[:12])
              + (" ..." if len(flagged) > 12 else ""))
    del model
    if agreement_texts <= 0:
        return
    # bf16 vs fp32: speed of the bare forward and agreement of the rankings.
    small = Corpus.of(corpus.name, corpus.texts[:agreement_texts])
    results = {}
    for dtype in ("float32", "bfloat16"):
        s = settings.model_copy(update={"dtype": dtype})
        m = lm.model if dtype == "float32" else copy.deepcopy(lm.model).to(torch.bfloat16)
        speed = bare_forward(m, batches[: max(4, len(batches) // 3)])
        tmp = tempfile.mkdtemp()
        build_index(lm, small, Path(tmp), s)
        results[dtype] = (speed, NeuronIndex.open(Path(tmp)))
        del m
    overlap, top1 = agreement(results["float32"][1], results["bfloat16"][1])
    bf16, fp32 = results["bfloat16"][0], results["float32"][0]
    print(f"bf16 vs fp32   bare forward {bf16:.0f} vs {fp32:.0f} tokens/s ({bf16 / fp32:.2f}x); "
          f"top-10 exemplar overlap {overlap:.1%}, same top-1 {top1:.1%} "
          f"({agreement_texts} texts)")
    for _, index in results.values():
        import shutil

        with contextlib.suppress(OSError):
            shutil.rmtree(index.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--agreement-texts", type=int, default=200)
    parser.add_argument("--models", nargs="*", default=list(EMBEDDED))
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    cache_dir = Path(os.environ.get("CIRCUITLAB_CACHE_DIR",
                                    Path(__file__).resolve().parents[1] / "models_cache"))
    corpus = default_corpus()
    corpus = Corpus.of(corpus.name, corpus.texts[: args.texts])
    settings = IndexSettings(dtype=args.dtype, snapshot_tokens=10**9).resolved("cpu")
    for name in args.models:
        bench(name, corpus, settings, cache_dir, args.agreement_texts)


if __name__ == "__main__":
    main()
