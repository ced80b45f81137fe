"""The `loghi-ft` command: parses options into one subcommand's settings and hands them to it."""

from __future__ import annotations

import argparse
import importlib
import sys

from loghi_ft import __version__, settings
from loghi_ft.errors import UserError

# subcommand name -> module in loghi_ft.commands with a Settings dataclass (see loghi_ft.settings) and
# run(settings) -> int
COMMANDS = {
    "prepare": "prepare",
    "train": "train",
    "infer": "infer",
    "eval": "evaluate",
    "text": "text",
    "compare": "compare",
    "review": "review",
    "export": "export",
    "import-loghi": "import_loghi",
    "segtrain": "segtrain",
    "segment": "segment",
    "segeval": "segeval",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loghi-ft", description="Fine-tune HTR models on PAGE XML and write the text back.")
    parser.add_argument("--version", action="version", version=f"loghi-ft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"loghi_ft.commands.{module_name}")
        doc = (module.__doc__ or "").strip().splitlines()
        # argparse %-formats help strings, so a literal % must be doubled
        p = sub.add_parser(name, help=doc[0].replace("%", "%%") if doc else None, description=module.__doc__)
        settings.add_arguments(p, module.Settings)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    words, overrides = settings.split_overrides(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(words)
        module = getattr(args, "_module", None)
        if module is None:
            parser.print_help()
            return 2
        return int(module.run(settings.resolve(module.Settings, args, overrides)) or 0)
    except UserError as exc:
        print(f"loghi-ft: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("loghi-ft: interrupted", file=sys.stderr)
        return 130
