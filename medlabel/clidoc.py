"""Generate docs/cli.md from the CLI's own --help texts (``python -m medlabel.clidoc > docs/cli.md``).

A test regenerates it and compares, so the reference never drifts from the code.
"""

from __future__ import annotations

import click

from medlabel.cli import cli


def _walk(command: click.Command, path: list[str]) -> list[str]:
    ctx = click.Context(command, info_name=" ".join(path), terminal_width=100, max_content_width=100)
    out = [f"## `{' '.join(path)}`", "", "```text", command.get_help(ctx).rstrip(), "```", ""]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            out += _walk(command.commands[name], [*path, name])
    return out


def render() -> str:
    header = ["# Command-line reference", "",
              "Generated from `--help` by `python -m medlabel.clidoc > docs/cli.md`; "
              "`tests/test_docs.py` keeps it current.", ""]
    return "\n".join(header + _walk(cli, ["medlabel"])).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
