"""The ``edgekit`` command line: compress, export, eval, bench, info, serve.

Errors end with one line on stderr (``edgekit: error: ...``) and exit status 2 for bad usage or
input, 1 for a failure while running; ``--debug`` shows the Python traceback instead. Choices
(runtimes, precisions, formats) are checked by click before any work, with a suggestion for a typo.
"""
from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

import click

from . import __version__
from .errors import EdgekitError, InputError, Interrupted
from .extras import hint_for

# Kept here rather than imported from edgekit.zoo (which imports torch) so that `--help` starts fast;
# tests/test_cli_help.py checks it against the zoo.
ZOO_HELP = {
    "minilm-l6": "all-MiniLM-L6-v2 sentence embeddings (feature extraction)",
    "minilm-l6-bbc": "minilm-l6 fine-tuned on bbc-news (5 classes); built on first use, 6-8 min",
    "tiny-bert": "2-layer random BERT for tests (feature extraction)",
    "tiny-bert-cls": "the same with a 5-class head",
    "vit-fmnist": "small ViT trained on fashion-mnist (images; default recipe tinymim); built on first use, ~30 min",
    "efficientnet-lite0": "EfficientNet-Lite0 ImageNet classifier (images; default recipe ptq)",
    "tiny-cnn": "3-stage random EfficientNet-Lite, 32x32 images, 4 classes (tests)",
}
RUNTIMES = ("torch", "onnxruntime", "openvino", "native")  # edgekit.runtimes.RUNTIMES; checked by a test
EXPORT_FORMATS = ("torch", "onnx", "openvino")  # edgekit.export.EXPORT_FORMATS; checked by a test
OPENVINO_PRECISIONS = ("f32", "bf16")
NATIVE_PRECISIONS = ("fp32", "bf16", "int8")
RECIPE_DIR = Path(__file__).resolve().parent / "recipes"

MODEL_HELP = ("MODEL is a zoo name, a Hugging Face model folder, or an edgekit artifact folder (has "
              "manifest.json).\n\n\b\nZoo:\n" + "\n".join(f"  {k:<{max(map(len, ZOO_HELP)) + 2}}{v}" for k, v in ZOO_HELP.items()))


DATA_HELP = ("bbc-news (built in) or a path: a CSV/TSV, JSON Lines (.jsonl) or Parquet file, a folder written by "
             "datasets.save_to_disk, a folder of split files (train.csv, test.csv, ...) or a folder of class "
             "sub-folders holding .txt files. Data without its own splits is split 70/10/20, stratified and seeded. "
             "Token classifiers read JSON Lines (or a table) with a 'tokens' list of words and a 'tags' list per row.")


def data_options(f):
    """``--data``, ``--text-column``, ``--text-pair-column``, ``--label-column`` (compress and eval)."""
    for opt in reversed([
        click.option("--data", default="bbc-news", show_default=True, metavar="NAME|PATH", help=DATA_HELP),
        click.option("--text-column", default="text", show_default=True, help="Column holding the text (tables)."),
        click.option("--text-pair-column", default=None,
                     help="Column holding the second text of sentence-pair data (text classification)."),
        click.option("--label-column", default="label", show_default=True,
                     help="Column holding the label: strings or integers (tables)."),
    ]):
        f = opt(f)
    return f


def data_spec(data: str, text_column: str, text_pair_column: str | None, label_column: str):
    """One :class:`edgekit.data.DataSpec` from the data options (a bad combination is one InputError line)."""
    from .data.spec import DataSpec

    return DataSpec(data, text_column=text_column, text_pair_column=text_pair_column, label_column=label_column)


def _did_you_mean(value: str, choices) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Choice(click.Choice):
    """click.Choice whose error reads like the library's and suggests the closest choice:
    ``unknown runtime 'onxruntime' (did you mean 'onnxruntime'?); allowed: torch, onnxruntime, ...``."""

    def __init__(self, choices, kind: str = "value"):
        super().__init__(choices)
        self.kind = kind

    def convert(self, value, param, ctx):
        if value in self.choices:
            return value
        self.fail(f"unknown {self.kind} {value!r}{_did_you_mean(str(value), self.choices)}; allowed: "
                  f"{', '.join(self.choices)}", param, ctx)


class CommaChoice(click.ParamType):
    """A comma-separated list of choices (``torch,openvino``): each item checked, duplicates dropped."""

    name = "list"

    def __init__(self, choices, kind: str):
        self.choices, self.kind = tuple(choices), kind

    def get_metavar(self, param, ctx=None) -> str:
        return "[" + "|".join(self.choices) + "],..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        if not items:
            self.fail(f"no {self.kind} given; allowed: {', '.join(self.choices)} (comma-separated)", param, ctx)
        for item in items:
            if item not in self.choices:
                self.fail(f"unknown {self.kind} {item!r}{_did_you_mean(item, self.choices)}; allowed: "
                          f"{', '.join(self.choices)} (comma-separated)", param, ctx)
        return tuple(dict.fromkeys(items))


class PositiveInts(click.ParamType):
    """Comma-separated positive integers (``1,8``)."""

    name = "ints"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            out = tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            out = ()
        if not out or min(out) < 1:
            self.fail(f"takes comma-separated positive integers, e.g. 1,8; got {value!r}", param, ctx)
        return out


def recipe_summaries() -> dict[str, str]:
    """Built-in recipe name -> its one-line ``description`` (what it does, how long it takes)."""
    import yaml

    out = {}
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        try:
            out[path.stem] = str((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("description") or "")
        except (OSError, ValueError, yaml.YAMLError, AttributeError):
            out[path.stem] = ""
    return out


class _CompressCommand(click.Command):
    """Lists the built-in recipes at the end of ``compress --help`` (read when help is shown, not at start-up)."""

    def format_epilog(self, ctx, formatter) -> None:
        rows = [(name, text or "(no description)") for name, text in recipe_summaries().items()]
        with formatter.section("Built-in recipes (--recipe NAME)"):
            formatter.write_dl(rows)
        super().format_epilog(ctx, formatter)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             invoke_without_command=True,
             epilog="MODEL (every command): a zoo name (" + ", ".join(ZOO_HELP) + "), a Hugging Face model folder "
                    "or an edgekit artifact folder.\n\n\b\nBuilt-in recipes and their times: edgekit compress --help.")
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show full Python tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """edgekit: compress trained transformers (block pruning, distillation, int8) and run them fast
    on CPUs, side by side with ONNX Runtime, OpenVINO and torch.

    \b
    Typical flow:
      edgekit compress minilm-l6-bbc -o out/bbc        # prune + distil + int8, with report.json
      edgekit eval out/bbc -r openvino                 # accuracy on bbc-news test
      edgekit compress ./my-model --data tickets.csv --text-column body --label-column queue -o out/mine
      edgekit bench out/bbc -r native,openvino,onnxruntime,torch -b 1,8
    """
    if ctx.invoked_subcommand is None:  # bare `edgekit`: the help, not an error
        click.echo(ctx.get_help())


@cli.command(short_help="CPU, ISA flags, runtime versions, kernel path.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--count-text", is_flag=True, help="Count the passages and words of every installed text source "
              "(reads them all: about two minutes on 2 cores; the counts are cached).")
def info(as_json: bool, count_text: bool) -> None:
    """CPU model, cores, ISA flags, runtime versions, the kernel path chosen, the photographs for image int8 and
    the text sources for distillation (with their sizes once counted: --count-text)."""
    from .info import format_info, machine_info

    data = machine_info(count_text=count_text)
    click.echo(json.dumps(data, indent=2) if as_json else format_info(data))


@cli.command(short_help="Export MODEL (fp32) to an artifact folder.", epilog=MODEL_HELP)
@click.argument("model")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False), help="Artifact folder to write.")
@click.option("--format", "formats", type=CommaChoice(EXPORT_FORMATS, "format"), default="onnx,openvino",
              show_default=True, help="Comma-separated formats (torch weights are always included).")
@click.option("--task", type=Choice(["feature-extraction", "text-classification", "token-classification"], "task"),
              help="Task; by default taken from the model.")
def export(model: str, out: str, formats: tuple[str, ...], task: str | None) -> None:
    """Export MODEL (fp32) to an artifact folder with manifest.json.

    MODEL is a zoo name or a Hugging Face model folder. The native format (edgekit's own engine) is
    written by `edgekit compress`, from a pruned int8 model."""
    from . import api

    art = api.export(model, out, formats=formats, task=task)
    click.echo(f"wrote {art.root} ({', '.join(sorted(art.manifest.formats))}; task {art.task})")


@cli.command(cls=_CompressCommand, short_help="Prune, distil and quantize MODEL; writes an artifact.",
             epilog=MODEL_HELP)
@click.argument("model")
@click.option("-o", "--output", "out", type=click.Path(file_okay=False), help="Artifact folder to write.")
@click.option("--recipe", default=None, metavar="NAME|FILE.yaml",
              help="A built-in recipe (listed below; default fast-distilbert) or a YAML file.")
@data_options
@click.option("--distill-data", default=None, metavar="PATH|SOURCE",
              help="Unlabelled text for distillation and calibration: a .txt file or folder of them, a table "
                   "(read with --text-column) or a registered text source (english-mix, ...: edgekit info). The "
                   "teacher labels it and training uses it; replaces the recipe's distill_data source.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Cap training steps per stage (quick runs).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (runs are deterministic).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoint (OUT.ckpt).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing artifact at -o and discard the checkpoint of an earlier run.")
@click.option("--print-recipe", is_flag=True, help="Print the resolved recipe and exit.")
def compress(model, out, recipe, data, text_column, text_pair_column, label_column, distill_data, max_steps, seed,
             resume, overwrite, print_recipe) -> None:
    """Compress MODEL with a recipe (prune, distil, quantize); writes an artifact with report.json.

    MODEL is fine-tuned on --data already (a classifier with one output per class of the data); the
    data trains, calibrates and scores it, and its label names go into the artifact.

    The output is checked before any work: an existing artifact is replaced only with --overwrite, a
    non-empty folder that is not an artifact never. Checkpoints go to OUT.ckpt; after Ctrl-C the same
    command with --resume continues."""
    from . import api

    if not out and not print_recipe:
        raise InputError("compress needs -o/--output DIR (or --print-recipe)")
    try:
        spec = data_spec(data, text_column, text_pair_column, label_column)
        report = api.compress(model, out, recipe=recipe, data=spec, distill_data=distill_data, max_steps=max_steps,
                              seed=seed, resume=resume, print_recipe=print_recipe, overwrite=overwrite)
    except KeyboardInterrupt:
        ckpt = api.checkpoint_dir(out)
        if (ckpt / "state.json").is_file():
            raise Interrupted(f"interrupted; the progress so far is in {ckpt}: rerun the same command with "
                              "--resume to continue") from None
        raise Interrupted("interrupted before the first checkpoint; nothing was kept (a run interrupted after "
                          "its first checkpoint continues with --resume)") from None
    if report and not print_recipe:
        click.echo(json.dumps({k: report[k] for k in ("baseline", "compressed", "precision") if k in report}, indent=2))
        written = [f for f in ("report.json", "report.md", "report.png") if (Path(out) / f).is_file()]
        click.echo(f"wrote {out} ({', '.join(written)})")


@cli.command(name="eval", short_help="Accuracy of MODEL on a runtime (test split of --data).", epilog=MODEL_HELP)
@click.argument("model")
@click.option("-r", "--runtime", type=Choice(RUNTIMES, "runtime"), default="torch", show_default=True, help="Runtime to run on.")
@data_options
@click.option("--reference", default=None, metavar="MODEL",
              help="MODEL to compare embeddings with (mean cosine on the test split).")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None, help="Threads (default: physical cores).")
@click.option("--precision", type=Choice(OPENVINO_PRECISIONS, "OpenVINO precision"), default=None,
              help="OpenVINO precision hint (default f32).")
@click.option("--native-precision", type=Choice(NATIVE_PRECISIONS, "native precision"), default=None,
              help="Native engine attention precision (bf16 needs AVX512_BF16; default: int8 for classifiers "
                   "where it runs, else fp32).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: task, data, metric, value, n, runtime.")
def eval_(model, runtime, data, text_column, text_pair_column, label_column, reference, threads, precision,
          native_precision, as_json) -> None:
    """Accuracy of MODEL on the test split of --data (default bbc-news; or your own file, see --data).

    Classifiers: accuracy. Feature extractors: linear-probe accuracy (logistic regression fitted on
    the train split's embeddings from the same runtime)."""
    from . import api

    _hint_applies(precision, "--precision", "openvino", [runtime])
    _hint_applies(native_precision, "--native-precision", "native", [runtime])
    spec = data_spec(data, text_column, text_pair_column, label_column)
    res = api.evaluate(model, runtime=runtime, data=spec, reference=reference, threads=threads,
                       precision=precision, native_precision=native_precision, progress=not as_json)
    if as_json:
        click.echo(json.dumps(res))
    else:
        extra = f", embedding cosine {res['embedding_cosine']:.4f}" if res.get("embedding_cosine") is not None else ""
        click.echo(f"{res['metric']} = {res['value']:.4f} on {res['data']} test (n={res['n']}, {res['runtime']}){extra}")


@cli.command(short_help="Latency and throughput of MODEL on several runtimes.", epilog=MODEL_HELP)
@click.argument("model")
@click.option("-r", "--runtime", "runtimes", type=CommaChoice(RUNTIMES, "runtime"),
              default="torch,onnxruntime,openvino", show_default=True, help="Comma-separated runtimes.")
@click.option("-b", "--batch", type=PositiveInts(), default="1,8", show_default=True,
              help="Comma-separated batch sizes.")
@click.option("-s", "--seq", type=PositiveInts(), default="128", show_default=True,
              help="Comma-separated sequence lengths (at most the model's maximum, e.g. 512).")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None,
              help="Threads for every runtime (default: physical cores).")
@click.option("--precision", type=Choice(OPENVINO_PRECISIONS, "OpenVINO precision"), default=None,
              help="OpenVINO precision hint (default f32).")
@click.option("--native-precision", type=Choice(NATIVE_PRECISIONS, "native precision"), default=None,
              help="Native engine attention precision: bf16 needs AVX512_BF16, int8 (Q K^T and P V) AVX-512 VNNI. "
                   "Default: int8 for classifiers where it runs, else fp32.")
@click.option("--baseline", default=None, metavar="MODEL",
              help="Also run MODEL (e.g. the fp32 original: minilm-l6-bbc) on the listed stock runtimes, "
                   "as contenders named RUNTIME-fp32, interleaved in the same rounds.")
@click.option("--budget-ms", type=float, default=10.0, show_default=True,
              help="p90 latency budget for latency-constrained throughput.")
@click.option("--min-time", type=float, default=2.0, show_default=True, help="Seconds timed per point.")
@click.option("--min-runs", type=click.IntRange(min=1), default=None,
              help="Timed runs per point (default 50; p99 is shown from 100).")
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Interleaved rounds per point (default ~10).")
@click.option("--reference", type=Choice(RUNTIMES + tuple(f"{r}-fp32" for r in RUNTIMES if r != "native"), "runtime"),
              default=None, help="Runtime the ratio column compares with (default: the first listed; "
                                 "RUNTIME-fp32 with --baseline).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write one JSON object per line per point.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write a Markdown table.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Draw latency per runtime to a PNG.")
def bench(model, runtimes, batch, seq, threads, precision, native_precision, baseline, budget_ms, min_time, min_runs,
          rounds, reference, json_path, md_path, plot_path) -> None:
    """Benchmark MODEL on several runtimes, interleaved round by round in one process.

    Prints p50/p90/p99/mean/min latency, throughput, how many times faster than the reference runtime
    each one is (median of per-round ratios), and the latency-constrained throughput (best items/s with
    p90 under --budget-ms)."""
    from . import api

    contenders = list(runtimes) + ([f"{r}-fp32" for r in runtimes if r != "native"] if baseline else [])
    if reference is not None and reference not in contenders:
        raise click.BadParameter(f"{reference!r} is not among the contenders ({', '.join(contenders)})",
                                 param_hint="'--reference'")
    _hint_applies(precision, "--precision", "openvino", runtimes)
    _hint_applies(native_precision, "--native-precision", "native", runtimes)
    rows, text = api.bench(model, runtimes=list(runtimes), batches=list(batch), seqs=list(seq), threads=threads,
                           precision=precision, budget_ms=budget_ms, min_time_s=min_time, json_path=json_path,
                           md_path=md_path, plot_path=plot_path, reference=reference, min_runs=min_runs,
                           rounds=rounds, baseline=baseline, native_precision=native_precision)
    click.echo(text)


@cli.command(short_help="Serve ARTIFACT over HTTP with dynamic batching.")
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="TCP port (0: any free port).")
@click.option("-r", "--runtime", type=Choice(RUNTIMES, "runtime"), default=None,
              help="Runtime (default: the first of native, onnxruntime, openvino, torch that the artifact has).")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None,
              help="Threads of the session (default: physical cores).")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Most inputs in one session run; inputs from concurrent requests share a run.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 10_000), default=2.0, show_default=True,
              help="How long a batch waits for more inputs before it runs.")
@click.option("--max-inputs", type=click.IntRange(min=1), default=256, show_default=True,
              help="Most inputs one request may carry (more: 413).")
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="Tokens per input (default: the model's maximum).")
@click.option("--auto-truncate/--no-auto-truncate", default=False, show_default=True,
              help="Cut inputs longer than --max-length instead of answering 413 (a request's \"truncate\" overrides).")
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve(artifact, host, port, runtime, threads, max_batch, max_wait_ms, max_inputs, max_length, auto_truncate,
          access_log) -> None:
    """Serve ARTIFACT over HTTP with dynamic batching until SIGTERM or Ctrl-C.

    \b
    Routes: POST /embed, POST /predict (Hugging Face text-embeddings-inference),
    POST /v1/embeddings (OpenAI), GET /health, GET /info, GET /metrics (Prometheus).
    SIGTERM lets requests in flight finish, then exits 0."""
    from .serve import ServeConfig
    from .serve import serve as run_server

    run_server(ServeConfig.create(artifact=artifact, host=host, port=port, runtime=runtime, threads=threads,
                                  max_batch=max_batch, max_wait_ms=max_wait_ms, max_inputs=max_inputs,
                                  max_length=max_length, auto_truncate=auto_truncate, access_log=access_log))


def _hint_applies(value, flag: str, runtime: str, runtimes) -> None:
    if value is not None and runtime not in runtimes:
        raise click.BadParameter(f"applies to the {runtime} runtime only, which is not among {', '.join(runtimes)}",
                                 param_hint=f"'{flag}'")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (also used in-process by the tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.exceptions.Abort:
        click.echo("edgekit: interrupted", err=True)
        return 130
    except click.UsageError as exc:
        if debug:
            raise
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"edgekit: error: {exc.format_message()}{hint}", err=True)
        return 2
    except Interrupted as exc:
        click.echo(f"edgekit: {exc}", err=True)
        return exc.exit_code
    except EdgekitError as exc:
        if debug:
            raise
        click.echo(f"edgekit: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("edgekit: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug or a library failure: still one line unless --debug
        if debug:
            raise
        # a library that a pip extra installs, found missing only on the way: the same line as an early check
        hint = hint_for(exc, "edgekit " + next((a for a in argv if not a.startswith("-")), "").strip())
        if hint is not None:
            click.echo(f"edgekit: error: {hint}", err=True)
            return hint.exit_code
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"edgekit: error: {type(exc).__name__}: {msg} (rerun with --debug for details)", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
