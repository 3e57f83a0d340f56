"""`capability-service serve | worker | process | metrics`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from capability_service.core.config import ConfigError, load_settings

# Each command reads its settings before importing what it runs (a few seconds of imports for the web app
# and the image pipelines), so a wrong setting stops it at once.


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    import uvicorn

    from capability_service.main import create_app

    app = create_app(settings)
    # One process: the in-memory job engine lives in it. Scale out with JOB_BACKEND=redis instead.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=None,
        # Behind a proxy: the scheme and client address come from its X-Forwarded-* headers when it is one
        # of these addresses; result URLs (without PUBLIC_BASE_URL) then carry the scheme the caller used.
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        # The service's own logging (LOG_FORMAT, request ids, redaction) writes uvicorn's lines too.
        log_config=None,
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _worker(args: argparse.Namespace) -> int:
    settings = load_settings(**({"log_level": args.log_level.upper()} if args.log_level else {}))
    from capability_service.worker import run_worker

    # Plugin settings are checked when the worker builds its services (a `ConfigError` too).
    return run_worker(settings, args.concurrency)


def _process(args: argparse.Namespace) -> int:
    settings = load_settings()
    from capability_service.batch.command import run_process

    return run_process(args, settings)


def _metrics(args: argparse.Namespace) -> int:
    settings = load_settings()
    import uvicorn

    from capability_service.metrics_server import create_metrics_app

    app = create_metrics_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", log_config=None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capability-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (and, in memory mode, the job engine)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on [8000]")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="ADDRESSES",
        help="comma-separated proxy addresses (or '*') whose X-Forwarded-Proto/-For are trusted "
        "[$FORWARDED_ALLOW_IPS, else loopback]",
    )
    serve.set_defaults(handler=_serve)
    worker = commands.add_parser("worker", help="process image tasks of the Redis job mode (JOB_BACKEND=redis)")
    worker.add_argument(
        "--concurrency", type=_positive_int, default=None, help="images processed at once [WORKER_CONCURRENCY, 2]"
    )
    worker.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    worker.set_defaults(handler=_worker)
    process = commands.add_parser(
        "process",
        help="run a pipeline over files, folders and URLs in this process (no server needed)",
        description=(
            "Run the job pipelines over files, folders (recursively) and URLs, writing results under --out with "
            "names that mirror the inputs. Options are the job API's config fields (camelCase or snake_case). "
            "Exit status: 0 when every image succeeded or was already done, 1 when any failed, 2 for a usage "
            "or settings error, 130 when stopped with Ctrl-C (finished files are kept)."
        ),
    )
    process.add_argument("operation", choices=["optimize", "enhance", "background"], help="what each image becomes")
    process.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, or http(s) URLs")
    process.add_argument("--out", "-o", required=True, type=Path, metavar="DIR", help="folder for the results")
    process.add_argument(
        "--option",
        "-O",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config field of the job type, e.g. maxSize=1200, format=jpg, backgroundPrompt='light grey studio'",
    )
    process.add_argument(
        "--glob",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only files of input folders matching PATTERN, e.g. '*.png' (case-insensitive; repeatable) "
        "[every image format the pipelines read]",
    )
    process.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="images processed at once [CPU_WORKERS: the core count]",
    )
    process.add_argument("--overwrite", action="store_true", help="replace results that exist [skip them]")
    process.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    process.set_defaults(handler=_process)
    exporter = commands.add_parser(
        "metrics", help="serve GET /metrics of this host's processes (for hosts that run workers and no API)"
    )
    exporter.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    exporter.add_argument("--port", type=int, default=9464, help="port to listen on [9464]")
    exporter.set_defaults(handler=_metrics)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except ConfigError as exc:
        # Settings that cannot work, whichever command read them: the reason, and the usage exit status.
        print(f"capability-service: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
