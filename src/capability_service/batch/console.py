"""What `capability-service process` shows: a live progress bar (stderr) and a summary (stdout)."""

from __future__ import annotations

import json
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from capability_service.batch.runner import BatchReport, ItemResult, ItemStatus


class ImagesPerSecondColumn(ProgressColumn):
    """Images finished per second, over the recent past (rich's own speed estimate)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} img/s" if speed else "- img/s", style="progress.data.speed")


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class ProgressDisplay:
    """The progress bar; failures are printed above it as they happen."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            ImagesPerSecondColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self.progress.add_task(label, total=None, start=False)

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.progress.stop()

    def start(self, total: int) -> None:
        self.progress.update(self._task, total=total)
        self.progress.start_task(self._task)

    def advance(self, result: ItemResult) -> None:
        if result.status is ItemStatus.stopped:
            return
        if result.status is ItemStatus.failed:
            self.progress.console.print(
                f"[red]failed[/red] {escape(result.item.name)}: {escape(result.error or '')}",
                highlight=False,
                soft_wrap=True,
            )
        self.progress.advance(self._task)

    def note(self, message: str) -> None:
        self.progress.console.print(message, highlight=False)


def print_summary(console: Console, report: BatchReport) -> None:
    """The table at the end: images done, skipped, failed (with reasons) and stopped; bytes in and out."""
    table = Table(title="Summary", title_justify="left")
    table.add_column("result")
    table.add_column("images", justify="right")
    table.add_column("bytes in", justify="right")
    table.add_column("bytes out", justify="right")
    table.add_column("saved", justify="right")
    saved = report.bytes_in - report.bytes_out
    share = f"{saved / report.bytes_in:.0%}" if report.bytes_in else "-"
    table.add_row(
        "done",
        str(report.count(ItemStatus.done)),
        human_bytes(report.bytes_in),
        human_bytes(report.bytes_out),
        f"{human_bytes(saved)} ({share})" if saved >= 0 else f"-{human_bytes(-saved)} ({share})",
    )
    for status, label in (
        (ItemStatus.skipped, "skipped (output exists)"),
        (ItemStatus.failed, "failed"),
        (ItemStatus.stopped, "stopped (not processed)"),
    ):
        table.add_row(label, str(report.count(status)), "", "", "")
    console.print(table)
    failures = report.of(ItemStatus.failed)
    if failures:
        # One line per image, never wrapped: easy to read, grep and copy from a log.
        console.print(f"[bold]Failed images ({len(failures)}):[/bold]", highlight=False)
        for result in failures:
            console.print(
                f"  {escape(result.item.name)}: {escape(result.error or '')}", highlight=False, soft_wrap=True
            )
    console.print(
        f"{report.count(ItemStatus.done)} processed in {report.seconds:.1f} s "
        f"({report.images_per_second:.2f} images/s)" + (" - stopped before the end" if report.interrupted else ""),
        highlight=False,
    )


def print_json(console: Console, report: BatchReport) -> None:
    console.out(json.dumps(report.as_dict(), ensure_ascii=False), highlight=False)
