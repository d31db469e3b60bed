"""The `circuitlab` command: serve the app, or run analyses straight from the shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from analysis.attribution.circuit_settings import CircuitSettings
from analysis.attribution.core import METHODS
from analysis.errors import CircuitlabError

cli = typer.Typer(help="circuitlab: find why a language model answers wrong.",
                  no_args_is_help=True, add_completion=False)

ModelOpt = Annotated[str | None, typer.Option("--model", "-m",
                     help="Registered model name (default: the configured default).")]
ChatOpt = Annotated[bool, typer.Option("--chat-template/--raw",
                    help="Wrap the prompt in the model's chat template.")]
SystemOpt = Annotated[str | None, typer.Option("--system-prompt")]
PrefixOpt = Annotated[str, typer.Option("--answer-prefix", help='e.g. " Answer:"')]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

# The circuit options read their defaults, limits' words and the method list from the
# one declaration (CircuitSettings and the method registry), never re-declared here.
_CIRCUIT = CircuitSettings.model_fields
MethodOpt = Annotated[str, typer.Option(help=" | ".join(METHODS) + ": "
                                        + _CIRCUIT["method"].description)]
TauOpt = Annotated[float, typer.Option(help=_CIRCUIT["tau"].description)]
MaxNodesOpt = Annotated[int, typer.Option(help=_CIRCUIT["max_nodes"].description)]


def _settings() -> Any:
    from app.settings import Settings

    return Settings()


def _load(name: str | None) -> Any:
    from analysis.models import load_model

    settings = _settings()
    spec = settings.registry().get(name or settings.default_model)
    return load_model(spec, settings.cache_dir), settings


def _fail(exc: Exception) -> None:
    """Exit 2 with the error's message and field: a CircuitlabError, or the first error
    of a pydantic ValidationError (a request body built from the options)."""
    if not isinstance(exc, CircuitlabError):
        first = exc.errors()[0]  # type: ignore[attr-defined]
        exc = CircuitlabError(first["msg"], field=".".join(map(str, first["loc"])))
    where = f" ({exc.field})" if exc.field else ""
    typer.secho(f"error{where}: {exc.message}", fg="red", err=True)
    raise typer.Exit(2)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    model: ModelOpt = None,
    insecure_no_token: Annotated[bool, typer.Option(
        "--insecure-no-token", help="Serve beyond localhost WITHOUT an API token: anyone "
        "who can reach the port may write and compute.")] = False,
) -> None:
    """Start the web app with the default model resident."""
    import logging

    import uvicorn

    from app.main import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")

    overrides: dict[str, Any] = {}
    if model:
        overrides["default_model"] = model
    if host:
        overrides["host"] = host  # the token rule follows the address actually bound
    if insecure_no_token:
        overrides["access"] = {"insecure_no_token": True}
    from app.access import start_refusal
    from app.settings import Settings

    settings = Settings(**overrides)
    if (refusal := start_refusal(settings)) is not None:
        typer.secho(refusal, fg="red", err=True)
        raise typer.Exit(2)
    if settings.access.insecure_no_token and not settings.api_token:
        typer.secho(f"WARNING: serving on {settings.host} with NO API token "
                    "(--insecure-no-token): anyone who can reach it may write and compute",
                    fg="red", err=True)
    app = create_app(settings)
    typer.echo(f"circuitlab: serving on http://{host or settings.host}:{port or settings.port}")
    uvicorn.run(app, host=host or settings.host, port=port or settings.port,
                log_level="info")


@cli.command()
def models(as_json: JsonOpt = False) -> None:
    """List the registered models."""
    from analysis.models import describe

    settings = _settings()
    rows = [describe(s, settings.cache_dir) for s in settings.registry().specs()]
    if as_json:
        typer.echo(json.dumps({"default": settings.default_model, "models": rows}, indent=2))
        return
    for r in rows:
        star = "*" if r["name"] == settings.default_model else " "
        extra = "" if r.get("converted") is None else (
            " (converted)" if r["converted"] else " (converts on first load)")
        typer.echo(f"{star} {r['name']:<24} {r['source']:<9} {r['kind']:<5} "
                   f"{r['description']}{extra}")


@cli.command()
def predict(
    prompt: Annotated[str, typer.Argument(help="The prompt text.")],
    answers: Annotated[list[str] | None, typer.Option("--answer", "-a",
                       help="An answer whose probability to report (repeatable).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 10,
    model: ModelOpt = None,
    chat_template: ChatOpt = False,
    system_prompt: SystemOpt = None,
    answer_prefix: PrefixOpt = "",
    both_formats: Annotated[bool, typer.Option(
        "--both-formats", help="Also show the plain completion and the seeds' chat format "
        "(chat template, empty system turn, ' Answer:') one after the other.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Top-k next tokens for one prompt, plus the first-token and whole-answer
    probabilities of named answers."""
    from analysis.predict import predict as run_predict
    from analysis.predict import predict_formats
    from analysis.prompts import PromptSpec

    try:
        lm, settings = _load(model)
        spec = PromptSpec(prompt=prompt, chat_template=chat_template,
                          system_prompt=system_prompt, answer_prefix=answer_prefix)
        results = [run_predict(lm, spec, answers or [], top_k, settings.limits)]
        if both_formats:
            results += predict_formats(lm, spec, answers or [], top_k, settings.limits)
    except CircuitlabError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(results[0].model_dump_json(indent=2) if not both_formats else
                   "[" + ",\n".join(r.model_dump_json(indent=2) for r in results) + "]")
        return
    for result in results:
        typer.echo(f"[{result.format}] formatted ({len(result.prompt.input_ids)} tokens): "
                   f"{result.prompt.text!r}")
        for t in result.top:
            typer.echo(f"{t.rank:>3}. {t.text!r:<20} p={t.prob:.4f}")
        for a in result.answers:
            note = f"   [{a.answer.note}]" if a.answer.note else ""
            whole = (f" whole-answer p={a.whole.prob:.4g} ({a.whole.n_tokens} tokens)"
                     if a.whole else "")
            typer.echo(f"answer {a.answer.answer!r} -> first token {a.answer.token_text!r}: "
                       f"p={a.prob:.4f} rank={a.rank}{whole}{note}")


@cli.command()
def screen(
    file: Annotated[Path, typer.Argument(help='JSON list: [{"prompt": ..., "answer": ...}] '
                                         "or an object with a 'prompts' list; '-' = stdin.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    skip_filler: Annotated[bool, typer.Option("--skip-filler/--no-skip-filler")] = True,
    filler_rule: Annotated[str, typer.Option(
        "--filler-rule", help="model: ask the model whether a top token is a lead-in; "
                              "list: the fixed filler list")] = "model",
    model: ModelOpt = None,
    chat_template: ChatOpt = False,
    system_prompt: SystemOpt = None,
    answer_prefix: PrefixOpt = "",
    output: Annotated[Path | None, typer.Option("--output", "-o",
                      help="Write the full result JSON here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Screen prompts for target cases: top-1 clearly wrong, correct answer in top-k."""
    from analysis.screening import ScreenOptions, parse_screen_json
    from analysis.screening import screen as run_screen

    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
        items = parse_screen_json(text)
        lm, settings = _load(model)
        options = ScreenOptions(top_k=top_k, skip_filler=skip_filler,
                                filler_rule=filler_rule,  # type: ignore[arg-type]
                                chat_template=chat_template, system_prompt=system_prompt,
                                answer_prefix=answer_prefix)
        result = run_screen(lm, items, options, settings.limits)
    except CircuitlabError as exc:
        _fail(exc)
        return
    if output:
        output.write_text(result.model_dump_json(indent=2))
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    for r in result.rows:
        flag = "TARGET" if r.target else ("wrong " if r.wrong else "ok    ")
        skipped = f"  (skipped: {'; '.join(r.skip_reasons)})" if r.skipped else ""
        whole = (f" whole {r.correct_whole_prob:.2%}" if r.correct_whole_prob is not None
                 else "")
        typer.echo(f"{flag} top1={r.top1.text!r} {r.top1.prob:.1%}  "
                   f"{r.answer!r}: rank {r.rank_excluding_filler} (filler not counted) "
                   f"first-token {r.correct_prob:.1%}"
                   f"{whole}  | {r.prompt[:60]}{skipped}")
    typer.echo(f"{len(result.targets)} target case(s) of {len(result.rows)} "
               f"[{result.format}; decided on {result.decided_on}; {result.filler_text}]")


@cli.command()
def analyze(
    prompt: Annotated[str, typer.Argument(help="The prompt text.")],
    contrastive: Annotated[tuple[str, str] | None, typer.Option(
        "--contrastive", help='Answers A and B: --contrastive " aldosterone" " renin"')] = None,
    target: Annotated[str | None, typer.Option(
        "--target", help="Single answer: the metric is logit(target).")] = None,
    method: MethodOpt = _CIRCUIT["method"].default,
    tau: TauOpt = _CIRCUIT["tau"].default,
    mass: Annotated[float | None, typer.Option(
        help="Cumulative mode instead of tau: keep this fraction of total |influence|.")]
        = None,
    max_nodes: MaxNodesOpt = _CIRCUIT["max_nodes"].default,
    edge_threshold: Annotated[float, typer.Option(
        help=_CIRCUIT["edge_threshold"].description)] = _CIRCUIT["edge_threshold"].default,
    no_edges: Annotated[bool, typer.Option("--no-edges")] = False,
    ig_steps: Annotated[int, typer.Option(help=_CIRCUIT["ig_steps"].description)] = (
        _CIRCUIT["ig_steps"].default),
    output: Annotated[Path | None, typer.Option("--output", "-o",
                      help="Directory for graph.json, circuit-tracer.json, summary.txt")]
        = None,
    model: ModelOpt = None,
    chat_template: ChatOpt = False,
    system_prompt: SystemOpt = None,
    answer_prefix: PrefixOpt = "",
) -> None:
    """Contrastive neuron attribution of one prompt (the seeds' analyze.py)."""
    from analysis.analyze import CircuitRequest
    from analysis.analyze import analyze as run_analyze
    from analysis.attribution import CircuitSettings, render_summary, to_circuit_tracer
    from analysis.attribution.export import write_viewer_files
    from analysis.prompts import PromptSpec
    from app.services import build_services
    from app.services.runs import prepared_circuit

    if (contrastive is None) == (target is None):
        _fail(CircuitlabError("give either --contrastive A B or --target A", field="answers"))
    answer_a, answer_b = contrastive if contrastive else (target, None)
    try:
        lm, settings = _load(model)
        # The model's complete exemplar index flags always-on neurons here as it does
        # for the server's runs: the same prompt keeps the same circuit from either.
        readers = build_services(settings).index_readers
        req = CircuitRequest(
            prompt=PromptSpec(prompt=prompt, chat_template=chat_template,
                              system_prompt=system_prompt, answer_prefix=answer_prefix),
            answer_a=answer_a or "", answer_b=answer_b,
            settings=CircuitSettings.checked(
                method=method, tau=tau, mode="cumulative" if mass is not None else "tau",
                mass=mass or 0.8, max_nodes=max_nodes, edges=not no_edges,
                edge_threshold=edge_threshold, ig_steps=ig_steps),
        )
        result = run_analyze(lm, req, settings.circuit_limits, prepared=prepared_circuit(
            lm, req, settings.circuit_limits, readers))
    except CircuitlabError as exc:
        _fail(exc)
        return
    summary = render_summary(result)
    typer.echo(summary)
    if output:
        output.mkdir(parents=True, exist_ok=True)
        result.save(output / "graph.json")
        graph = to_circuit_tracer(result)
        (output / "circuit-tracer.json").write_text(json.dumps(graph))
        # The folder circuit-tracer's local viewer serves: <slug>.json + graph-metadata.json.
        write_viewer_files(graph, output / "viewer")
        (output / "summary.txt").write_text(summary + "\n")
        typer.echo(f"wrote {output}/graph.json, circuit-tracer.json, viewer/, summary.txt")


@cli.command()
def compare(
    prompt: Annotated[str, typer.Argument(help="The prompt text.")],
    base: Annotated[str, typer.Option("--base", help="The base model's registered name.")],
    variant: Annotated[str, typer.Option("--variant", help="A fine-tuned variant's name.")],
    contrastive: Annotated[tuple[str, str], typer.Option(
        "--contrastive", help='Answers A (right) and B (wrong): --contrastive " aldosterone" '
                              '" renin"')],
    method: MethodOpt = _CIRCUIT["method"].default,
    tau: TauOpt = _CIRCUIT["tau"].default,
    max_nodes: MaxNodesOpt = _CIRCUIT["max_nodes"].default,
    prompt_set: Annotated[Path | None, typer.Option(
        "--prompt-set", help="File of lines 'kind | prompt | expected | wrong'.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Directory for comparison.json, neurons.csv, prompts.csv")]
        = None,
    chat_template: ChatOpt = False,
    system_prompt: SystemOpt = None,
    answer_prefix: PrefixOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Base vs fine-tuned variant on one prompt: predictions, per-neuron categories, the
    verdict (correction / compensation), weight changes and layer patching. Saved in the
    app's database, so it also opens on the Compare page."""
    from pydantic import ValidationError

    from app.schemas import CompareBody
    from app.services import build_services
    from app.services.compare import parse_prompt_set, run_comparison
    from frontend.compare import neurons_csv, prompts_csv

    settings = _settings()
    services = build_services(settings)  # the same objects the server builds
    runs = services.runs
    try:
        items = parse_prompt_set(prompt_set.read_text()) if prompt_set else []
        body = CompareBody(base=base, variant=variant, prompt=prompt,
                           chat_template=chat_template, system_prompt=system_prompt,
                           answer_prefix=answer_prefix, answer_a=contrastive[0],
                           answer_b=contrastive[1], method=method,  # type: ignore[arg-type]
                           tau=tau, max_nodes=max_nodes, prompt_set=items)
        run = run_comparison(body, services.manager, settings, runs, services.index_readers)
    except (CircuitlabError, ValidationError) as exc:
        _fail(exc)
        return
    from app.services.compare import load_comparison

    result = load_comparison(run, runs)
    if as_json:
        typer.echo(result.model_dump_json(exclude={"base_circuit", "tuned_circuit"}))
    else:
        typer.echo(result.summary())
        typer.echo(f"saved as comparison {run.id} (open /compare/{run.id} in the app)")
    if output:
        output.mkdir(parents=True, exist_ok=True)
        (output / "comparison.json").write_text(
            result.model_dump_json(indent=1, exclude={"base_circuit", "tuned_circuit"}))
        (output / "neurons.csv").write_text(neurons_csv(result))
        (output / "prompts.csv").write_text(prompts_csv(result))
        typer.echo(f"wrote {output}/comparison.json, neurons.csv, prompts.csv")


@cli.command()
def patch(
    prompt: Annotated[str, typer.Argument(help="The prompt text.")],
    base: Annotated[str, typer.Option("--base", help="The model patched into.")],
    variant: Annotated[str, typer.Option("--variant",
                                         help="The model whose layers are patched in.")],
    contrastive: Annotated[tuple[str, str], typer.Option(
        "--contrastive", help='Answers A (right) and B (wrong): --contrastive " aldosterone" '
                              '" renin"')],
    chat_template: ChatOpt = False,
    system_prompt: SystemOpt = None,
    answer_prefix: PrefixOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Layer patching between two models of one architecture, without a circuit: the
    share of the change in m that each layer's MLP output and residual stream carry.
    Runs on models NDIF hosts too."""
    from pydantic import TypeAdapter, ValidationError

    from analysis.comparison.layer_patching import LayerShare
    from app.schemas import PatchingBody
    from app.services import build_services
    from app.services.compare import run_patching

    settings = _settings()
    services = build_services(settings)
    try:
        body = PatchingBody(base=base, variant=variant, prompt=prompt,
                            chat_template=chat_template, system_prompt=system_prompt,
                            answer_prefix=answer_prefix, answer_a=contrastive[0],
                            answer_b=contrastive[1])
        shares = run_patching(body, services.manager, settings)
    except (CircuitlabError, ValidationError) as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(TypeAdapter(list[LayerShare]).dump_json(shares).decode())
        return

    def pct(x: float | None) -> str:
        return "   n/a" if x is None else f"{100 * x:5.0f}%"

    typer.echo("layer   m (MLP patched)  share   m (residual patched)  share")
    for row in shares:
        typer.echo(f"{row.layer:5d}   {row.m_mlp:15.3f}  {pct(row.mlp_share)}   "
                   f"{row.m_residual:20.3f}  {pct(row.residual_share)}")


@cli.command()
def index(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    corpus: Annotated[Path | None, typer.Option(
        "--corpus", help="A .txt (one text per line) or .jsonl ({\"text\": ...} per line) "
        "file, or a folder of them (default: the built-in WordNet sample).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Top contexts kept per neuron.")] = 20,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Index directory (default: <data_dir>/indexes/<model>/<corpus key>/).")]
        = None,
    dtype: Annotated[str | None, typer.Option(help="auto (default) | float32 | bfloat16")] = None,
    max_len: Annotated[int | None, typer.Option(help="Tokens per text.")] = None,
) -> None:
    """Build (or resume) the neuron exemplar index of a model over a corpus. Ctrl-C stops
    it at a consistent point; running the same command again continues."""
    import signal

    from tqdm import tqdm

    from analysis.neurons.corpus import default_corpus, load_corpus
    from analysis.neurons.index import (
        Cancelled,
        IndexProgress,
        IndexSettings,
        build_index,
        default_index_dir,
    )

    stop = {"requested": False}
    try:
        texts = load_corpus(corpus) if corpus is not None else default_corpus()
        overrides: dict[str, Any] = {"top_k": top_k}
        if dtype is not None:
            overrides["dtype"] = dtype
        if max_len is not None:
            overrides["max_len"] = max_len
        settings = IndexSettings(**overrides)
        lm, app_settings = _load(model)
        target = out or default_index_dir(app_settings.data_dir, lm.name, texts.key)
        typer.echo(f"indexing {lm.name} over {texts.name!r} ({len(texts.texts):,} texts) "
                   f"into {target}")
        bar = tqdm(unit="tok", unit_scale=True, dynamic_ncols=True)

        def progress(p: IndexProgress) -> None:
            bar.total = p.tokens_total
            bar.n = p.tokens_done
            bar.set_postfix_str(f"{p.tokens_per_s:.0f} tok/s, ETA "
                                f"{p.eta_s / 60:.1f} min" if p.eta_s is not None else "")
            bar.refresh()

        def interrupt(signum: int, frame: Any) -> None:
            stop["requested"] = True

        previous = signal.signal(signal.SIGINT, interrupt)
        try:
            summary = build_index(lm, texts, target, settings, on_progress=progress,
                                  should_stop=lambda: stop["requested"])
        finally:
            signal.signal(signal.SIGINT, previous)
            bar.close()
    except Cancelled as exc:
        typer.echo(str(exc))
        raise typer.Exit(130) from exc
    except CircuitlabError as exc:
        _fail(exc)
        return
    except ValueError as exc:  # pydantic's validation of the settings
        _fail(CircuitlabError(str(exc).splitlines()[-1] if str(exc) else repr(exc)))
        return
    state = "complete" if summary.complete else "incomplete"
    typer.echo(f"{state}: {summary.tokens_done:,} of {summary.tokens_total:,} tokens, "
               f"{summary.size_bytes / 1e6:.1f} MB in {summary.path}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
