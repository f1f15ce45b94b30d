"""The ``python -m mpiml.data`` command line: make, convert, link and inspect HDF5 training data.

Subcommands (docs/data.md), each a function of :mod:`mpiml.data.tools`:

* ``synth``   -- a synthetic data set drawn from a hidden model fixed by the seed;
* ``convert`` -- CSV, LIBSVM/svmlight, .npy, .npz or Parquet to HDF5, optionally split into
  training, test and validation sets;
* ``link``    -- several HDF5 files as one data set (virtual data sets, no rows copied);
* ``inspect`` -- data sets, shapes, dtypes, label counts and NaN/Inf counts (streamed);
* ``example`` -- scikit-learn's bundled data sets with a fixed train/test split.

The functions raise ``ValueError`` (:class:`~mpiml.data.DataError` for bad input data) or
``OSError``; :func:`main` turns those into one line on stderr and exit status 1. Progress goes
to stderr only when it is a terminal.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from ..data.tools import convert, inspect, link, synth, write_example
from ..data.tools.examples import EXAMPLES
from ..data.tools.synthetic import SYNTH_TASKS
from . import add_version

PROG = "python -m mpiml.data"


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is below {least}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not finite")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not in [0, 1)")
    return value


def _label_column(text: str) -> str | int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Make, convert, link and inspect HDF5 training data for mpiml "
                               "(see docs/data.md).")
    add_version(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    make = commands.add_parser("synth", help="generate a synthetic data set",
                               description=synth.__doc__.split("\n\n")[0])
    make.add_argument("--task", required=True, choices=SYNTH_TASKS)
    make.add_argument("--rows", required=True, type=_positive_int)
    make.add_argument("--features", required=True, type=_positive_int)
    make.add_argument("--classes", type=_positive_int, help="multiclass/blobs (default 3)")
    make.add_argument("--informative", type=_positive_int,
                      help="features the hidden model uses (default min(features, 10); "
                           "all when sparse)")
    make.add_argument("--noise", type=_number, default=1.0,
                      help="standard deviation of the noise (default 1)")
    make.add_argument("--density", type=_number, default=1.0,
                      help="fraction of nonzero cells; below 1 writes CSR (default 1)")
    make.add_argument("--test-rows", type=_non_negative_int, default=0,
                      help="rows of a held-out X_test/y_test (default 0)")
    make.add_argument("--seed", required=True, type=_non_negative_int)
    make.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    make.add_argument("--chunk-rows", type=_positive_int,
                      help="rows per HDF5 write (default about 4 MB); does not change the output")
    make.add_argument("--force", action="store_true", help="overwrite OUT")
    make.add_argument("out", metavar="OUT.h5")

    conv = commands.add_parser("convert", help="convert CSV, LIBSVM, .npy, .npz or Parquet "
                                               "to HDF5",
                               description=convert.__doc__.split("\n\n")[0])
    conv.add_argument("src", metavar="IN", help="input file (a directory: Parquet files)")
    conv.add_argument("out", metavar="OUT.h5")
    conv.add_argument("--format", choices=("csv", "libsvm", "npy", "npz", "parquet"),
                      help="input format (default: from the extension)")
    conv.add_argument("--label-column", type=_label_column, default=-1,
                      help="CSV/Parquet label column: name, index (default -1 = last) or "
                           "none")
    conv.add_argument("--header", choices=("auto", "yes", "no"), default="auto")
    conv.add_argument("--delimiter", help="CSV delimiter (default ',' or tab for .tsv)")
    conv.add_argument("--n-features", type=_positive_int, help="LIBSVM: number of features")
    conv.add_argument("--zero-based", choices=("auto", "yes", "no"), default="auto",
                      help="LIBSVM: are feature indices zero-based (default auto)")
    conv.add_argument("--x-key", default="X", help=".npz: array of features (default X)")
    conv.add_argument("--y-key", default="y", help=".npz: array of labels (default y)")
    conv.add_argument("--dtype", choices=("float32", "float64"))
    conv.add_argument("--test-fraction", type=_fraction, default=0.0,
                      help="move this share of the rows, at random, to X_test/y_test "
                           "(default 0)")
    conv.add_argument("--validation-fraction", type=_fraction, default=0.0,
                      help="move this share of the rows, at random, to X_val/y_val (default 0)")
    conv.add_argument("--split-seed", type=_non_negative_int, default=0,
                      help="seed of the random split (default 0)")
    conv.add_argument("--force", action="store_true", help="overwrite OUT")

    join = commands.add_parser("link", help="join HDF5 files into one data set without "
                                            "copying rows",
                               description="Join HDF5 files into one data set: OUT's virtual "
                                           "data sets X and y (and X_test/y_test, X_val/y_val "
                                           "when every input has them) are the inputs' rows "
                                           "in order; no row is copied. Dense X only.")
    join.add_argument("out", metavar="OUT.h5")
    join.add_argument("sources", metavar="IN.h5", nargs="+")
    join.add_argument("--absolute", action="store_true",
                      help="store absolute paths (default: relative to OUT's directory)")
    join.add_argument("--force", action="store_true", help="overwrite OUT")

    look = commands.add_parser("inspect", help="describe an HDF5 data file")
    look.add_argument("path", metavar="FILE.h5")

    example = commands.add_parser("example", help="write a scikit-learn bundled data set (or "
                                                  "the generated 'line': y = 2x + 1 + noise)")
    example.add_argument("name", choices=sorted(EXAMPLES))
    example.add_argument("out", metavar="OUT.h5")
    example.add_argument("--force", action="store_true", help="overwrite OUT")
    return parser


def _check_output(out: str, force: bool, src: str | None = None) -> None:
    if src is not None and os.path.abspath(src) == os.path.abspath(out):
        raise ValueError(f"{out}: output and input are the same file")
    if os.path.exists(out) and not force:
        raise ValueError(f"{out} exists; pass --force to overwrite it")


def _run(args: argparse.Namespace) -> None:
    progress = sys.stderr.isatty()
    if args.command == "synth":
        _check_output(args.out, args.force)
        synth(args.out, args.task, args.rows, args.features, seed=args.seed,
              classes=args.classes, informative=args.informative, noise=args.noise,
              density=args.density, test_rows=args.test_rows, dtype=args.dtype,
              chunk_rows=args.chunk_rows, progress=progress)
    elif args.command == "convert":
        _check_output(args.out, args.force, args.src)
        delimiter = args.delimiter.replace("\\t", "\t") if args.delimiter else None
        convert(args.src, args.out, fmt=args.format, label_column=args.label_column,
                header=args.header, delimiter=delimiter, n_features=args.n_features,
                zero_based=args.zero_based, x_key=args.x_key, y_key=args.y_key,
                dtype=args.dtype, test_fraction=args.test_fraction,
                validation_fraction=args.validation_fraction, split_seed=args.split_seed,
                progress=progress)
    elif args.command == "link":
        _check_output(args.out, args.force)
        for note in link(args.out, args.sources, absolute=args.absolute):
            sys.stderr.write(f"{PROG} link: note: {note}\n")
    elif args.command == "inspect":
        sys.stdout.write(inspect(args.path) + "\n")
    else:
        _check_output(args.out, args.force)
        write_example(args.name, args.out)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mpiml.data``; returns the exit status.

    0 on success, 1 for bad input or arguments (one line on stderr, no traceback), 2 for usage
    errors found by argparse, 130 on Ctrl-C.
    """
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    return 0
