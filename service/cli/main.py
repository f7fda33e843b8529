"""``cnn-serving``: the command line's entry point (``python -m service`` is ``cnn-serving serve``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service import SERVER_NAME, __version__
from service.cli import client, serve
from service.cli.errors import ConfigurationError
from service.core import logs


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("CNN_URL", client.DEFAULT_URL),
        help=f"the server's base URL [CNN_URL; default: {client.DEFAULT_URL}]",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("CNN_API_KEY"), help="the API key, if the server has one [CNN_API_KEY]"
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog=SERVER_NAME, allow_abbrev=False, description="Serve convolutional networks, and ask a running server."
    )
    main.add_argument("--version", action="version", version=f"{SERVER_NAME} {__version__}")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands)
    predict = commands.add_parser(
        "predict",
        help="classify local images with a running server",
        description="Classify image files (PNG, JPEG, ...) with a running server.",
    )
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    predict.add_argument("--model", default="fashion_cnn", help="model name (default: fashion_cnn)")
    predict.add_argument("--top-k", type=int, default=3, help="classes to list per image (default: 3)")
    _client_options(predict)
    summary = commands.add_parser(
        "summary",
        help="a model's architecture table",
        description="The per-layer architecture summary of a served model.",
    )
    summary.add_argument("model")
    _client_options(summary)
    models = commands.add_parser(
        "models",
        help="models, versions, states and labels",
        description="Every model of a running server: versions, states, labels.",
    )
    _client_options(models)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser()
    args, extra = arguments.parse_known_args(argv)
    if extra:
        arguments.exit(2, f"{SERVER_NAME}: error: {serve.unknown_flags(extra)}\n")
    try:
        if args.command == "serve":
            logging.basicConfig(level=logging.INFO, format=logs.HUMAN_FORMAT)
            serve.run(*serve.settings_from(args, os.environ))
            return 0
        if args.command == "predict":
            print(client.predict(args.url, args.model, args.images, args.top_k, args.api_key, args.json))
        elif args.command == "summary":
            print(client.summary(args.url, args.model, args.api_key, args.json))
        else:
            print(client.models(args.url, args.api_key, args.json))
    except ConfigurationError as exc:
        print(f"{SERVER_NAME}: {exc}", file=sys.stderr)
        return 2
    except client.ClientError as exc:
        print(f"{SERVER_NAME}: {exc}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """The console script."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (``cnn-serving summary m | head``): not an error here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
