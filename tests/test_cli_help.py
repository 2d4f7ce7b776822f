"""Help a user can navigate: zoo names, recipes with what they do and how long, choices, short
flags, command summaries that are not cut off, and a bare `edgekit` that prints help, not an error."""
from __future__ import annotations

import re

import pytest

from edgekit import cli
from edgekit.cli import main

COMMANDS = ("bench", "compress", "eval", "export", "info", "serve")


def _help(capsys, *argv) -> str:
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_bare_edgekit_prints_help_without_an_error(capsys):
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Usage: edgekit") and "Commands:" in out
    assert err == "" and "error:" not in out.lower()
    assert all(name in out for name in cli.ZOO_HELP) and "edgekit compress --help" in out


def test_command_summaries_are_not_cut_off(capsys):
    out = _help(capsys)
    block = out.split("Commands:")[1].split("\n\n")[0]
    listed = dict(re.findall(r"^  (\w+)\s+(.+)$", block, flags=re.M))
    assert set(listed) == set(COMMANDS)
    for name, summary in listed.items():
        assert not summary.endswith("..."), summary
        assert summary == cli.cli.commands[name].short_help


def test_help_lists_zoo_names_and_they_match_the_zoo(capsys):
    from edgekit.zoo import ZOO

    assert set(cli.ZOO_HELP) == set(ZOO)  # the light copy in cli.py cannot drift from the zoo
    for cmd in ("compress", "eval", "bench", "export"):
        out = _help(capsys, cmd)
        for name in ZOO:
            assert re.search(rf"^\s+{re.escape(name)}\s+\S", out, flags=re.M), (cmd, name)


def test_compress_help_lists_every_builtin_recipe_with_what_and_how_long(capsys):
    from edgekit.compress.config import builtin_recipes, load_recipe

    out = _help(capsys, "compress")
    section = out.split("Built-in recipes")[1]
    for name in builtin_recipes():
        desc = load_recipe(name).description
        assert desc, f"recipe {name} has no description"
        assert re.search(r"\d+ min|a minute", desc), f"recipe {name}: no time estimate in {desc!r}"
        assert name in section and desc.split()[0] in section
    assert "--overwrite" in out and "--resume" in out


def test_choices_match_the_library(capsys):
    from edgekit.export import EXPORT_FORMATS
    from edgekit.runtimes import RUNTIMES
    from edgekit.runtimes.openvino_backend import HINTS

    assert cli.RUNTIMES == RUNTIMES and cli.EXPORT_FORMATS == EXPORT_FORMATS
    assert cli.OPENVINO_PRECISIONS == HINTS
    bench = _help(capsys, "bench")
    assert "[torch|onnxruntime|openvino|native],..." in bench
    assert "--precision [f32|bf16]" in bench and "--native-precision [fp32|bf16|int8]" in bench
    ev = _help(capsys, "eval")
    assert "-r, --runtime [torch|onnxruntime|openvino|native]" in ev
    assert "--native-precision [fp32|bf16|int8]" in ev
    assert "[torch|onnx|openvino],..." in _help(capsys, "export")


@pytest.mark.parametrize("cmd, flags", [
    ("bench", ["-r, --runtime", "-b, --batch", "-s, --seq", "-t, --threads"]),
    ("eval", ["-r, --runtime", "-t, --threads"]),
    ("compress", ["-o, --output"]),
    ("serve", ["-r, --runtime", "-t, --threads"]),
])
def test_short_flags_next_to_long_ones(capsys, cmd, flags):
    out = _help(capsys, cmd)
    for flag in flags:
        assert flag in out, flag


def test_every_command_has_help(capsys):
    for cmd in COMMANDS:
        assert f"Usage: edgekit {cmd}" in _help(capsys, cmd)
