"""How soon a new default index is usable for the seed prompt (issue 22.4).

Builds the default corpus's index for an embedded model into a temporary directory and,
at every readable snapshot, asks what a user of the seed prompt needs:

* each of the seed run's 12 strongest drivers has its 12 top exemplars and a description;
* the concept probes find neurons: "kidney", "blood pressure", "sodium", "hormone".

Prints the time of each snapshot and when both first hold ("first usable"), with the load
average before and after (a loaded machine is slower; say which it was). Stops at the
first usable snapshot unless --full.

    .venv/bin/python benchmarks/bench_first_index.py [--model smollm2-135m-instruct] [--full]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.analyze import CircuitRequest, analyze
from analysis.attribution import CircuitSettings
from analysis.models import embedded_spec, load_model
from analysis.neurons.corpus import default_corpus
from analysis.neurons.index import IndexSettings, NeuronIndex, build_index
from analysis.neurons.schema import IndexProgress
from analysis.neurons.search import search
from analysis.prompts import PromptSpec

SEED = "The primary hormone involved in the regulation of blood pressure and volume is"
PROBES = ("kidney", "blood pressure", "sodium", "hormone")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--full", action="store_true", help="build the whole index")
    args = ap.parse_args()
    cache = Path(os.environ.get("CIRCUITLAB_CACHE_DIR", "models_cache"))
    lm = load_model(embedded_spec(args.model), cache)
    run = analyze(lm, CircuitRequest(prompt=PromptSpec(prompt=SEED), answer_a=" aldosterone",
                                     answer_b=" renin", settings=CircuitSettings()))
    drivers = [(n.layer, n.neuron) for n in
               sorted(run.neurons, key=lambda n: -abs(n.influence))[:12]]
    corpus = default_corpus()
    print(f"model {lm.name}; corpus {corpus.name}: {len(corpus.texts):,} texts; "
          f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} cores", flush=True)
    progress: list[IndexProgress] = []
    usable_at: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "index"
        started = time.perf_counter()
        stop = threading.Event()

        def check() -> bool:
            """At a new snapshot: is the index usable for the seed prompt yet?"""
            try:
                index = NeuronIndex.open(out)
            except Exception:  # nothing flushed yet
                return False
            full = all(len(index.exemplars(la, n, 12)) == 12 for la, n in drivers)
            found = {q: len(search(index, q, 50)) for q in PROBES}
            elapsed = time.perf_counter() - started
            print(f"  {elapsed:6.0f} s  {index.meta.tokens_done:>9,} tokens  drivers with "
                  f"12 exemplars: {'all' if full else 'not all'}  probe hits: {found}",
                  flush=True)
            return full and all(found.values())

        seen = {"snapshot": None}

        def on_progress(p: IndexProgress) -> None:
            progress.append(p)
            meta_file = out / "meta.json"
            snap = meta_file.stat().st_mtime_ns if meta_file.exists() else None
            if snap != seen["snapshot"]:
                seen["snapshot"] = snap
                if not usable_at and check():
                    usable_at.append(time.perf_counter() - started)
                    if not args.full:
                        stop.set()

        try:
            build_index(lm, corpus, out, IndexSettings(), on_progress=on_progress,
                        should_stop=stop.is_set)
        except Exception as exc:  # Cancelled at the first usable snapshot
            if type(exc).__name__ != "Cancelled":
                raise
        total = time.perf_counter() - started
    last = progress[-1] if progress else None
    rate = f"{last.tokens_per_s:,.0f} tokens/s" if last else "no progress"
    print(f"first usable index: {usable_at[0]:.0f} s" if usable_at else
          "never usable in this run")
    print(f"built {last.tokens_done if last else 0:,} of "
          f"{last.tokens_total if last else 0:,} tokens in {total:.0f} s ({rate}); "
          f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
