"""What the commands print, on click's side: a generation's paths (or its
JSON), drawn or opened as asked; the history, one generation, what files
claim, what a download saved, the models; and a batch's rows as they come,
with a progress bar on a terminal, then its summary. The lines themselves
are ``text``'s; a problem to report is a non-zero exit here."""

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


def _lines(lines: Any) -> None:
    for line in lines:
        click.echo(line)


def history(entries: list[Any], paths: bool, json_: bool) -> None:
    from . import text
    from .terminal import dumps

    if json_:
        click.echo(dumps(text.history_json(entries), indent=2))
    else:
        _lines(text.history_lines(entries, paths))


def shown(shown: Any, json_: bool, preview: bool) -> None:
    """One generation's fields (or its JSON), its images drawn if asked."""
    from . import text
    from .terminal import dumps

    if json_:
        click.echo(dumps(shown.data, indent=2))
    else:
        _lines(text.show_lines(shown.data))
    if preview:
        from .preview import draw

        draw([i.path for i in shown.entry.images if i.path], json_=json_)


def inspected(inspected: Any, json_: bool) -> None:
    from . import text
    from .terminal import dumps

    if json_:
        click.echo(dumps(inspected.items, indent=2, ensure_ascii=False))
    else:
        for item in inspected.items:
            _lines(text.inspect_lines(item))
    if inspected.problem:
        raise click.ClickException(inspected.problem)


def downloaded(results: Any) -> None:
    """Each saved path as it comes; what could not be saved, and each
    generation's note, on standard error."""
    from .terminal import notify, printable

    for result in results:
        for path in result.saved:
            click.echo(printable(path))
        for image in result.failed:
            notify(
                f"{result.id}: image {image.position + 1} could not be saved: "
                f"{image.error}"
            )
        if result.note:
            notify(f"{result.id}: {result.note}")


def models(rows: list[Any], problem: str | None) -> None:
    from . import text

    for row in rows:
        _lines(text.model_lines(row))
    if problem:
        raise click.ClickException(problem)


def batch_outcome(outcome: Any) -> None:
    """A batch's requests (on a dry run), then its summary and estimate on
    standard error; exit 1 when a row failed."""
    from .terminal import dumps, notify

    for request in outcome.requests or []:
        click.echo(dumps(request))
    notify(outcome.summary)
    if outcome.estimate:
        notify(outcome.estimate)
    if outcome.failed:
        raise SystemExit(1)


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
