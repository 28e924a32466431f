"""`hat-ray` entry point. Every HatRayError (and OSError: disk full, permission denied) becomes
one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from hat_ray import __version__
from hat_ray.errors import HatRayError

# Subcommand modules in hat_ray/cli/; each exposes register(subparsers) and sets args.func.
# To add a command: write hat_ray/cli/<name>.py and append its module name here.
COMMANDS = (
    "space_cmd",
    "arch_cmd",
    "import_hat_cmd",
    "search_cmd",
    "train_cmd",
    "evaluate_cmd",
    "latency_cmd",
    "pipeline_cmd",
    "cluster_cmd",
    "export_cmd",
    "translate_cmd",
)


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its message to one line + hint."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"hat-ray: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hat-ray", description="Hardware-aware Transformer search on Ray.")
    parser.add_argument("--version", action="version", version=f"hat-ray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"hat_ray.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except HatRayError as exc:
        print(f"hat-ray: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine, not a bug: a full disk, a read-only or missing folder
        where = f" {exc.filename}" if exc.filename else ""
        print(f"hat-ray: error: cannot access{where}: {exc.strerror or exc}; check the path, its permissions "
              "and free disk space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hat-ray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
