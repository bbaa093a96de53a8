"""Generate docs/cli.md from the CLI's own --help texts (``python -m medlabel.clidoc > docs/cli.md``).

A test regenerates it and compares, so the reference never drifts from the code.
"""

from __future__ import annotations

import click

from medlabel.cli import cli


def _walk(command: click.Command, path: list[str], parent: click.Context | None = None) -> list[str]:
    # A parent context passes the group's settings (e.g. -h as a help option) down, as on the command line.
    ctx = click.Context(command, info_name=path[-1], parent=parent, terminal_width=100, max_content_width=100,
                        **(command.context_settings if parent is None else {}))
    out = [f"## `{' '.join(path)}`", "", "```text", command.get_help(ctx).rstrip(), "```", ""]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            out += _walk(command.commands[name], [*path, name], ctx)
    return out


def render() -> str:
    header = ["# Command-line reference", "",
              "Generated from `--help` by `python -m medlabel.clidoc > docs/cli.md`; "
              "`tests/test_docs.py` keeps it current.", ""]
    return "\n".join(header + _walk(cli, ["medlabel"])).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
