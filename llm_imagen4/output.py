"""What the commands print, on click's side: a generation's paths (or its
JSON), drawn or opened as asked, and a batch's rows as they come, with a
progress bar on a terminal. The lines themselves are ``text``'s."""

from __future__ import annotations

import sys
from typing import Any

import click


def generated(generated: Any, json_: bool, open_: bool, preview: bool) -> None:
    """A generation's saved paths (or its JSON), drawn or opened as asked; a
    non-zero exit when an image was not saved."""
    from . import text
    from .terminal import dumps, notify, printable

    if json_:
        click.echo(dumps(text.generated_json(generated)))
    else:
        for path in generated.paths:
            click.echo(printable(path))
    if preview:
        from .preview import draw

        draw(generated.paths, json_=json_)
    if open_:
        from . import opener

        if problem := opener.launch(generated.paths):
            notify(problem)
    if generated.problem:
        raise click.ClickException(generated.problem)


class BatchPrinter:
    """Each row's outcome as it comes: its paths on standard output (or one
    JSON object a row), a failure on standard error, and on a terminal a
    progress bar of the rows sent, drawn again below what is printed."""

    def __init__(self, json_: bool):
        self.json_ = json_
        self.bar: Any = None

    def sending(self, count: int) -> None:
        if sys.stderr.isatty():
            self.bar = click.progressbar(
                length=count,
                label="Generating",
                file=sys.stderr,
                show_pos=True,
                show_percent=True,
            )
            self.bar.render_progress()

    def reported(self, report: Any) -> None:
        from .terminal import dumps, notify, printable

        if self.bar and report.sent:
            # The bar off its line while the row is printed.
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        if self.json_:
            click.echo(dumps(report.json()))
        else:
            if report.status == "failed":
                notify(f"Row {report.row.number}: {report.fields.get('error')}")
            for path in report.fields.get("paths", []):
                click.echo(printable(path))
        if self.bar and report.sent:
            self.bar.update(1)

    def finish(self) -> None:
        if self.bar:
            self.bar.render_finish()
