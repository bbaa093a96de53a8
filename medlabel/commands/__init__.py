"""CLI subcommands, one module each; ``medlabel.cli`` registers them explicitly."""
