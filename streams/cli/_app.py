"""The one Typer application every `llmens` sub-command registers on."""

import typer

app = typer.Typer(
    name="llmens",
    help="llmens: turn a stream of product changes into trustworthy attributes by asking several LLMs "
    "and learning, with online Dawid-Skene, whom to believe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
