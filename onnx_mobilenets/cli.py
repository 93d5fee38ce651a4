"""The `onnx-mobilenets` command line."""

from __future__ import annotations

import argparse
import logging
import sys

from . import catalogue


def _cmd_list(args) -> int:
    rows = [("name", "family", "alpha", "res", "top-1", "top-5", "MMACs", "Mparams", "sha256")]
    for v in catalogue.list_variants(args.family):
        rows.append((v.name, v.family, str(v.alpha), str(v.resolution), f"{v.top1:.1f}", f"{v.top5:.1f}",
                     str(v.macs_millions), f"{v.params_millions:.2f}", "published" if v.checkpoint_sha256 else "-"))
    _print_table(rows)
    return 0


def _print_table(rows) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnx-mobilenets", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("list", help="show the catalogue of published variants")
    p.add_argument("--family", choices=("v1", "v2"))
    p.set_defaults(run=_cmd_list)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.run(args)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a package error: say what failed without a traceback
        from .errors import OnnxMobileNetsError

        if isinstance(e, OnnxMobileNetsError):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
