"""The ``jaxcg`` command: ``demo``, ``reference``, ``train``, ``simulate``, ``analyze``.

Stateful wrappers (progress bars, files) live here, on top of the pure library.
"""

from __future__ import annotations

import argparse
import sys


def _add_reference_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg reference SYSTEM ...`: generate all-atom reference data with OpenMM."""
    parser = subparsers.add_parser(
        "reference",
        help="generate all-atom reference positions and forces with OpenMM",
        description="Simulate a built-in system with OpenMM (Langevin) and write a jaxcg "
        "dataset (HDF5, positions nm, forces kJ/mol/nm), chunk by chunk and resumable.",
    )
    parser.add_argument("system", choices=["water_dimer", "alanine_dipeptide", "chignolin"])
    parser.add_argument(
        "--solvent", default="vacuum", choices=["vacuum", "implicit", "explicit"],
        help="implicit (GBn2) and explicit (TIP3P, PME) only for the peptides",
    )
    parser.add_argument("--rigid", action="store_true", help="rigid TIP3P (water_dimer only)")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--ns", type=float, help="simulated time to record, ns")
    length.add_argument("--frames", type=int, help="number of frames to record")
    parser.add_argument(
        "--save-every", type=int, default=None,
        help="steps between frames (default 0.5 ps water dimer, 1 ps peptides)",
    )
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", required=True, help="output HDF5 file")
    parser.add_argument("--resume", action="store_true", help="continue OUT from its last chunk")
    parser.add_argument("--platform", default=None, help="OpenMM platform (default: the faster)")
    parser.set_defaults(func=_run_reference)


def _run_reference(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jaxcg.reference import generate

    with tqdm(unit="frame", desc=f"{args.system} ({args.solvent})") as bar:

        def progress(done: int, total: int, ns_per_day: float) -> None:
            if bar.total != total:  # first call: frames of a resumed file count as initial
                bar.reset(total=total)
                bar.initial = bar.n = done
            bar.set_postfix_str(f"{ns_per_day:.1f} ns/day", refresh=False)
            bar.update(done - bar.n)

        try:
            path = generate(
                args.system, args.out, n_frames=args.frames, ns=args.ns,
                save_every=args.save_every, temperature=args.temperature, seed=args.seed,
                solvent=args.solvent, rigid=args.rigid, platform=args.platform,
                resume=args.resume, progress=progress,
            )
        except ValueError as err:
            bar.close()
            print(f"jaxcg reference: error: {err}", file=sys.stderr)
            return 2
    print(f"wrote {path}")
    return 0


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
