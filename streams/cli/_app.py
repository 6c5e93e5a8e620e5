"""The one Typer application every `llmens` sub-command registers on."""

import typer

app = typer.Typer(
    name="llmens",
    help="llmens: turn a stream of product changes into trustworthy attributes by asking several LLMs "
    "and learning, with online Dawid-Skene, whom to believe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # plain help: fits 80 columns and shows no <bool> for flags (typer 0.29)
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"llmens {version('llmens')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """llmens: turn a stream of product changes into trustworthy attributes by asking several LLMs and
    learning, with online Dawid-Skene, whom to believe."""
