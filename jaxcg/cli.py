"""The ``jaxcg`` command: ``demo``, ``reference``, ``train``, ``simulate``, ``analyze``.

Stateful wrappers (progress bars, files) live here, on top of the pure library.
"""

from __future__ import annotations

import argparse
import sys


def _add_reference_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg reference SYSTEM ...`: generate all-atom reference data with OpenMM."""
    # Filled in by the reference-data work (jaxcg/reference).
    return None


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg train ...`: force matching of a CG model (jaxcg.train)."""
    # Filled in by the training work (jaxcg/train.py).
    return None


def _add_simulate_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg simulate ...`: CG Langevin dynamics of many replicas (jaxcg.simulate)."""
    # Filled in by the simulation work (jaxcg/simulate.py).
    return None


def _add_analyze_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg analyze ...`: PMFs, FES, TICA against the reference (jaxcg.analysis)."""
    # Filled in by the analysis work (jaxcg/analysis.py).
    return None


def _add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="map the bundled water dimer and print the maps' noise")
    parser.add_argument("--out", default="demo-output", help="output folder")
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from jaxcg.demo import run_demo

    return run_demo(out=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcg", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(subparsers)
    _add_reference_parser(subparsers)
    _add_train_parser(subparsers)
    _add_simulate_parser(subparsers)
    _add_analyze_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
