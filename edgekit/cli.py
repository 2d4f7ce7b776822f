"""The ``edgekit`` command line: compress, export, eval, bench, info.

Errors end with one line on stderr (``edgekit: error: ...``) and exit status 2 for bad usage or
input, 1 for a failure while running; ``--debug`` shows the Python traceback instead.
"""
from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import EdgekitError, InputError

MODEL_HELP = ("MODEL is a zoo name (minilm-l6, minilm-l6-bbc, tiny-bert, tiny-bert-cls), a Hugging Face "
              "model folder, or an edgekit artifact folder (has manifest.json).")


def _ints(value: str, name: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--{name} takes comma-separated positive integers, e.g. 1,8; got {value!r}") from None
    if not out or any(v < 1 for v in out):
        raise InputError(f"--{name} takes comma-separated positive integers, e.g. 1,8; got {value!r}")
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show full Python tracebacks on errors.")
def cli(debug: bool) -> None:
    """edgekit: compress trained transformers (block pruning, distillation, int8) and run them fast
    on CPUs, side by side with ONNX Runtime, OpenVINO and torch.

    \b
    Typical flow:
      edgekit compress minilm-l6-bbc -o out/bbc        # prune + distil + int8, with report.json
      edgekit eval out/bbc --runtime openvino          # accuracy on bbc-news test
      edgekit bench out/bbc --runtime native,openvino,onnxruntime,torch
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(as_json: bool) -> None:
    """CPU model, cores, ISA flags, runtime versions and the kernel path chosen."""
    from .info import format_info, machine_info

    data = machine_info()
    click.echo(json.dumps(data, indent=2) if as_json else format_info(data))


@cli.command()
@click.argument("model")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False), help="Artifact folder to write.")
@click.option("--format", "formats", default="onnx,openvino", show_default=True,
              help="Comma-separated formats: onnx, openvino, torch (torch weights are always included).")
@click.option("--task", type=click.Choice(["feature-extraction", "text-classification"]),
              help="Task; by default taken from the model.")
def export(model: str, out: str, formats: str, task: str | None) -> None:
    """Export MODEL (fp32) to an artifact folder with manifest.json.

    MODEL is a zoo name or a Hugging Face model folder."""
    from . import api

    art = api.export(model, out, formats=formats, task=task)
    click.echo(f"wrote {art.root} ({', '.join(sorted(art.manifest.formats))}; task {art.task})")


@cli.command()
@click.argument("model")
@click.option("-o", "--output", "out", type=click.Path(file_okay=False), help="Artifact folder to write.")
@click.option("--recipe", default=None, help="Built-in recipe name (default: fast-distilbert) or a YAML file.")
@click.option("--data", default="bbc-news", show_default=True, help="Dataset for training, calibration and evaluation.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Cap training steps per stage (quick runs).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (runs are deterministic).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint of an interrupted run.")
@click.option("--print-recipe", is_flag=True, help="Print the resolved recipe and exit.")
def compress(model, out, recipe, data, max_steps, seed, resume, print_recipe) -> None:
    """Compress MODEL with a recipe (prune, distil, quantize); writes an artifact with report.json."""
    from . import api

    if not out and not print_recipe:
        raise InputError("compress needs -o/--output DIR (or --print-recipe)")
    report = api.compress(model, out, recipe=recipe, data=data, max_steps=max_steps, seed=seed, resume=resume,
                          print_recipe=print_recipe)
    if report and not print_recipe:
        click.echo(json.dumps({k: report[k] for k in ("baseline", "compressed", "precision") if k in report}, indent=2))
        click.echo(f"wrote {out} (report.json, report.md)")


@cli.command(name="eval")
@click.argument("model")
@click.option("--runtime", default="torch", show_default=True, help="torch, onnxruntime, openvino or native.")
@click.option("--data", default="bbc-news", show_default=True, help="Dataset (test split).")
@click.option("--reference", default=None, help="MODEL to compare embeddings with (mean cosine on the test split).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads (default: physical cores).")
@click.option("--precision", default=None, help="Runtime precision hint (OpenVINO: f32 or bf16; default f32).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: task, data, metric, value, n, runtime.")
def eval_(model, runtime, data, reference, threads, precision, as_json) -> None:
    """Accuracy of MODEL on the bbc-news test split.

    Classifiers: accuracy. Feature extractors: linear-probe accuracy (logistic regression fitted on
    the train split's embeddings from the same runtime)."""
    from . import api

    res = api.evaluate(model, runtime=runtime, data=data, reference=reference, threads=threads,
                       precision=precision, progress=not as_json)
    if as_json:
        click.echo(json.dumps(res))
    else:
        extra = f", embedding cosine {res['embedding_cosine']:.4f}" if res.get("embedding_cosine") is not None else ""
        click.echo(f"{res['metric']} = {res['value']:.4f} on {res['data']} test (n={res['n']}, {res['runtime']}){extra}")


@cli.command()
@click.argument("model")
@click.option("--runtime", "runtimes", default="torch,onnxruntime,openvino", show_default=True,
              help="Comma-separated runtimes: torch, onnxruntime, openvino, native.")
@click.option("--batch", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--seq", default="128", show_default=True, help="Comma-separated sequence lengths.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for every runtime (default: physical cores).")
@click.option("--precision", default=None, help="OpenVINO precision hint: f32 (default) or bf16.")
@click.option("--native-precision", default=None,
              help="Native engine attention precision: fp32, bf16 (AVX512_BF16 CPUs) or int8 (Q K^T and P V on "
                   "AVX-512 VNNI). Default: int8 for classifiers where it runs, else fp32.")
@click.option("--baseline", default=None, metavar="MODEL",
              help="Also run MODEL (e.g. the fp32 original: minilm-l6-bbc) on the listed stock runtimes, "
                   "as contenders named RUNTIME-fp32, interleaved in the same rounds.")
@click.option("--budget-ms", type=float, default=10.0, show_default=True,
              help="p90 latency budget for latency-constrained throughput.")
@click.option("--min-time", type=float, default=2.0, show_default=True, help="Seconds timed per point (at least 50 runs).")
@click.option("--min-runs", type=click.IntRange(min=1), default=None, help="Timed runs per point (default 50).")
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Interleaved rounds per point (default ~10).")
@click.option("--reference", default=None, help="Runtime the ratio column compares with (default: the first listed).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write one JSON object per line per point.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write a Markdown table.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Draw latency per runtime to a PNG.")
def bench(model, runtimes, batch, seq, threads, precision, native_precision, baseline, budget_ms, min_time, min_runs,
          rounds, reference, json_path, md_path, plot_path) -> None:
    """Benchmark MODEL on several runtimes, interleaved round by round in one process.

    Prints p50/p90/p99/mean/min latency, throughput and the ratio to the reference runtime (per
    interleaved round, median), plus the
    latency-constrained throughput (best items/s with p90 under --budget-ms)."""
    from . import api

    rows, text = api.bench(model, runtimes=runtimes, batches=_ints(batch, "batch"), seqs=_ints(seq, "seq"),
                           threads=threads, precision=precision, budget_ms=budget_ms, min_time_s=min_time,
                           json_path=json_path, md_path=md_path, plot_path=plot_path, reference=reference,
                           min_runs=min_runs, rounds=rounds, baseline=baseline,
                           native_precision=native_precision)
    click.echo(text)


@cli.command()
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="TCP port (0: any free port).")
@click.option("--runtime", default=None,
              help="torch, onnxruntime, openvino or native (default: the first of native, onnxruntime, openvino, "
                   "torch that the artifact has).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads of the session (default: physical cores).")
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
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"edgekit: error: {type(exc).__name__}: {msg} (rerun with --debug for details)", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
