"""``sound-cluster-show TREE.json [--depth N | --segments K]``: a segment tree as indented text."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .tree import read_tree_json, render


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sound-cluster-show", description=__doc__.split(":", 1)[1].strip())
    ap.add_argument("tree", type=Path, help="a trees/<path>.json file of a run")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--depth", type=int, default=None, help="show nodes down to this depth (root = 0)")
    group.add_argument("--segments", type=int, default=None,
                       help="show the K segments left after the first n-K merges")
    args = ap.parse_args(argv)
    try:
        doc = read_tree_json(args.tree)
    except (OSError, ValueError) as err:
        print(f"sound-cluster-show: {err}", file=sys.stderr)
        return 2
    if args.depth is not None and args.depth < 0:
        ap.error(f"--depth must be >= 0, got {args.depth}")
    if args.segments is not None and not 1 <= args.segments <= doc["n_leaves"]:
        ap.error(f"--segments must be between 1 and {doc['n_leaves']} (the leaves), got {args.segments}")
    print(render(doc, depth=args.depth if args.segments is None and args.depth is not None else
                 (3 if args.segments is None else None), segments=args.segments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
