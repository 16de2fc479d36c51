#!/usr/bin/env python3
"""Generate the embedded shapes data set (ultralytics layout) from a seed.

    python dataset/make_shapes.py                      # the default set, into dataset/shapes
    python dataset/make_shapes.py --train 40 --val 10 --size 128 --out /tmp/shapes_small

``load_data("shapes")`` (config ``data: shapes``) does the same on first use.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ppyolo_slim  # noqa: E402,F401  (native import order first)
from ppyolo_slim.data.records import DataError  # noqa: E402
from ppyolo_slim.data.shapes import DEFAULTS, default_shapes_dir, ensure_shapes, generate_shapes  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help=f"output folder (default: {default_shapes_dir()})")
    p.add_argument("--train", type=int, default=DEFAULTS["n_train"], help="train images")
    p.add_argument("--val", type=int, default=DEFAULTS["n_val"], help="val images")
    p.add_argument("--size", type=int, default=DEFAULTS["img_size"],
                   help="base image size in pixels (images are size x size or 5:4 / 4:3 around it)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--force", action="store_true", help="regenerate even if an identical set exists")
    a = p.parse_args(argv)
    out = a.out or default_shapes_dir()
    try:
        if a.force:
            path = generate_shapes(out, a.train, a.val, a.size, a.seed, force=True)
        else:
            path = ensure_shapes(out, a.train, a.val, a.size, a.seed)
    except (DataError, ValueError, OSError) as e:
        print(f"make_shapes: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
