"""`capability-service process`: settings, plugins and inputs -> the runner, with progress and a summary."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from rich.console import Console

from capability_service.batch.console import ProgressDisplay, print_json, print_summary
from capability_service.batch.inputs import WorkItem, plan
from capability_service.batch.options import BatchError, parse_pairs, resolve_operation
from capability_service.batch.runner import BatchReport, BatchRunner
from capability_service.core.config import Settings
from capability_service.plugins.manager import default_registry
from capability_service.providers.base import ImageEditProvider
from capability_service.providers.factory import create_provider

# Exit statuses: every image done (or already done); some failed; the command itself is wrong; stopped.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 130


def run_process(args: argparse.Namespace, settings: Settings) -> int:
    out = Console()
    err = Console(stderr=True)
    # The service's own modules log at INFO for a server's operator; here only problems are worth a line.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # libvips warns per broken tile of a truncated file; the image's own error already says it.
    logging.getLogger("pyvips").setLevel(logging.ERROR)
    provider = create_provider(settings)
    try:
        plugins = default_registry(settings, provider)
        operation = resolve_operation(args.operation, parse_pairs(args.option), plugins)
        items = plan(args.inputs, args.out, operation.extension, args.glob)
    except BatchError as exc:
        _error(err, f"capability-service process: {exc}")
        _close(provider)
        return EXIT_USAGE
    if not items:
        _error(err, "capability-service process: no images found in the inputs")
        _close(provider)
        return EXIT_USAGE
    runner = BatchRunner(settings, operation, workers=args.workers or settings.cpu_workers, overwrite=args.overwrite)
    try:
        report = asyncio.run(_run(runner, items, err, provider))
    except KeyboardInterrupt:
        # A Ctrl-C outside the run itself (start-up, shut-down): nothing half-written is left behind.
        err.print("stopped", highlight=False)
        return EXIT_STOPPED
    if report is None:
        return EXIT_STOPPED
    if args.json:
        print_json(out, report)
    else:
        print_summary(out, report)
    if report.interrupted:
        return EXIT_STOPPED
    return EXIT_OK if report.ok else EXIT_FAILED


def _error(console: Console, message: str) -> None:
    console.print(message, highlight=False, markup=False, soft_wrap=True)


def _close(provider: ImageEditProvider | None) -> None:
    if provider is not None:
        asyncio.run(provider.close())


async def _run(
    runner: BatchRunner, items: list[WorkItem], console: Console, provider: ImageEditProvider | None
) -> BatchReport | None:
    loop = asyncio.get_running_loop()
    with ProgressDisplay(console, runner.operation.name) as display:
        task = asyncio.create_task(runner.run(items, on_result=display.advance, on_start=display.start))

        def interrupt() -> None:
            # First Ctrl-C: the images in progress finish and are written; the second abandons them.
            if not runner.stopping:
                runner.stop()
                display.note("stopping: finishing the images in progress (Ctrl-C again to stop at once)")
            else:
                task.cancel()

        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, interrupt)
        try:
            return await task
        except asyncio.CancelledError:
            return None
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            if provider is not None:
                await provider.close()
