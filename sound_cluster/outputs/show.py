"""``sound-cluster-show TREE.json [--depth N | --segments K]``: a segment tree as indented text."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sound_cluster.segment.tree import read_tree_json, render


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sound-cluster-show", description=__doc__.split(":", 1)[1].strip())
    ap.add_argument("tree", type=Path, help="a trees/<path>.json file of a run")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--depth", type=int, default=None, help="show nodes down to this depth (root = 0)")
    group.add_argument("--segments", default=None,
                       help="show the K segments left after the first n-K merges; 'auto': the count the tree "
                            "chose itself (its auto_k)")
    args = ap.parse_args(argv)
    problem = None
    if args.tree.is_dir():
        problem = f"{args.tree} is a folder; give one tree file, e.g. {args.tree}/trees/<file>.json"
    elif args.tree.suffix.lower() != ".json":
        problem = (f"{args.tree} is not a tree file; trees are the trees/<path>.json files of a run folder "
                   f"(for a.wav: outputs/<run>/trees/a.wav.json)")
    if problem:
        print(f"sound-cluster-show: {problem}", file=sys.stderr)
        return 2
    try:
        doc = read_tree_json(args.tree)
    except FileNotFoundError:
        print(f"sound-cluster-show: {args.tree} does not exist", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        print(f"sound-cluster-show: {args.tree} is not a tree file of sound_cluster: {err}", file=sys.stderr)
        return 2
    if not isinstance(doc, dict) or "root" not in doc or "n_leaves" not in doc:
        print(f"sound-cluster-show: {args.tree} is JSON but not a segment tree (no root)", file=sys.stderr)
        return 2
    if args.depth is not None and args.depth < 0:
        ap.error(f"--depth must be >= 0, got {args.depth}")
    if args.segments is not None and args.segments != "auto":
        if not args.segments.isdigit() or not 1 <= int(args.segments) <= doc["n_leaves"]:
            ap.error(f"--segments must be auto or between 1 and {doc['n_leaves']} (the leaves), got {args.segments}")
        args.segments = int(args.segments)
    if args.segments == "auto" and "auto_k" not in doc:
        ap.error(f"{args.tree} records no auto_k (written by an older version); give a number")
    text = render(doc, depth=args.depth if args.segments is None and args.depth is not None else
                  (3 if args.segments is None else None), segments=args.segments)
    from sound_cluster.logs import printable

    try:
        print("\n".join(printable(line) for line in text.split("\n")))  # a source name's controls escaped
        sys.stdout.flush()
    except BrokenPipeError:  # `sound-cluster-show ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
