"""The ``jaxcg`` command: ``demo``, ``reference``, ``train``, ``simulate``, ``analyze``, ``evaluate``, ``export``.

Stateful wrappers (progress bars, files) live here, on top of the pure library.
"""

from __future__ import annotations

import argparse
import sys

from jaxcg.devices import use_host_devices
from jaxcg.pipeline import DEFAULT_TRAIN
from jaxcg.pipeline import ModelSpec as _ModelSpec

MODEL = _ModelSpec()


def _add_reference_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg reference SYSTEM ...`: generate all-atom reference data with OpenMM."""
    parser = subparsers.add_parser(
        "reference",
        help="generate all-atom reference positions and forces with OpenMM",
        description="Simulate a built-in system with OpenMM (Langevin) and write a jaxcg "
        "dataset (HDF5, positions nm, forces kJ/mol/nm), chunk by chunk and resumable.",
    )
    parser.add_argument("system", choices=["water_dimer", "alanine_dipeptide", "chignolin", "villin"])
    parser.add_argument(
        "--solvent", default=None, choices=["vacuum", "implicit", "explicit"],
        help="implicit (GBn2) and explicit (TIP3P, PME) only for the peptides; default vacuum, "
        "explicit for villin",
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
    parser.add_argument("--resume", action="store_true",
                        help="continue OUT from its last chunk (every setting must match OUT's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--platform", default=None, help="OpenMM platform (default: the faster)")
    parser.set_defaults(func=_run_reference)


def _run_reference(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jaxcg.reference import generate
    from jaxcg.reference._systems import default_solvent

    solvent = args.solvent = args.solvent or default_solvent(args.system)  # recorded resolved
    with tqdm(unit="frame", desc=f"{args.system} ({solvent})") as bar:

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
                solvent=solvent, rigid=args.rigid, platform=args.platform,
                resume=args.resume, progress=progress, overwrite=args.overwrite,
            )
        except (ValueError, OSError) as err:
            bar.close()
            print(f"jaxcg reference: error: {err}", file=sys.stderr)
            return 2
    print(f"wrote {path}")
    return 0


def _selected_atoms(topology, selection: str, option: str, source: str):
    """Atom indices of an mdtraj ``selection``; a bad or empty selection is a ValueError naming
    the option and the file it was applied to."""
    try:
        atoms = topology.select(selection)
    except Exception as err:  # mdtraj raises several types for bad syntax
        raise ValueError(f"{option} {selection!r} is not a valid mdtraj selection: {err}") from err
    if atoms.size == 0:
        raise ValueError(f"{option} {selection!r} matches no atoms of {source}")
    return atoms


class _DataPaths(argparse.Action):
    """``--data A`` keeps one path (a str); ``--data A B`` or ``--data A --data B`` gives a list.
    Paths given on the command line replace a ``--config`` default."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        given = [] if current is None or current is parser.get_default(self.dest) else (
            [current] if isinstance(current, str) else list(current))
        paths = given + list(values)
        setattr(namespace, self.dest, paths[0] if len(paths) == 1 else paths)


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg train ...`: force matching of a CG model (jaxcg.train)."""
    parser = subparsers.add_parser(
        "train",
        help="force-match a prior + SchNet CG model",
        description="Fit Boltzmann-inversion priors to the CG data, then train a SchNet on the "
        "delta forces (mapped minus prior forces) with Adam. Writes OUT/metrics.json|csv, "
        "OUT/checkpoints/ (orbax, one per epoch; --resume continues exactly), OUT/model.npz + "
        "OUT/model.json (the best parameters) and OUT/energy.py (for `jaxcg simulate --energy "
        "OUT/energy.py:energy`). With several --data (all-atom .h5 datasets): one SchNet for every "
        "molecule, beads typed by (residue name, atom name) in a shared vocabulary (in "
        "OUT/model.json), a prior per molecule, and OUT/molecule_K/ (model + energy.py) for each.",
    )
    parser.add_argument("--data", required=True, nargs="+", action=_DataPaths,
                        help="CG data .npz (positions (T, N, 3) nm, forces (T, N, 3) kJ/mol/nm, "
                        "bead_types (N,), bonds (B, 2), temperature K) or an all-atom jaxcg "
                        "dataset .h5 mapped with --map/--selection; several .h5 datasets (--data A B "
                        "or --data A --data B) train one model of several molecules")
    parser.add_argument("--map", choices=["slice", "basic", "optimal"], default="optimal",
                        help="force map for an .h5 dataset (default optimal: the valid map of least "
                        "noise; slice is invalid under constraints)")
    parser.add_argument("--selection", default="name CA",
                        help="mdtraj selection of the beads, one atom each (default 'name CA'); "
                        "beads are typed by (residue name, atom name)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the checkpoints, metrics and model of an earlier run in OUT")
    parser.add_argument("--allow-invalid-map", action="store_true",
                        help="train even if the force map fails check_map (e.g. slice on constrained data)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_TRAIN.epochs,
                        help=f"epochs (default {DEFAULT_TRAIN.epochs}; the best validation epoch is kept)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_TRAIN.batch_size)
    parser.add_argument("--lr", type=float, default=DEFAULT_TRAIN.learning_rate, help="peak learning rate")
    parser.add_argument("--schedule", choices=["cosine", "constant"], default=DEFAULT_TRAIN.schedule)
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_TRAIN.val_fraction)
    parser.add_argument("--patience", type=int, default=DEFAULT_TRAIN.patience,
                        help="stop after this many epochs without validation improvement (default: never)")
    parser.add_argument("--features", type=int, default=MODEL.features)
    parser.add_argument("--blocks", type=int, default=MODEL.blocks)
    parser.add_argument("--rbf", type=int, default=MODEL.rbf)
    parser.add_argument("--cutoff", type=float, default=MODEL.cutoff, help="nm")
    parser.add_argument("--exclusion-hops", type=int, default=MODEL.exclusion_hops,
                        help="leave pairs at most this many bonds apart out of the SchNet")
    parser.add_argument("--no-prior", action="store_true", help="train the SchNet alone")
    parser.add_argument("--devices", type=int, default=1,
                        help="local devices for data parallelism (--batch-size a multiple of it); the "
                             "jaxcg command splits the CPU into one device per core; 0: all of them")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_train_run)


def _train_load_cg(args: argparse.Namespace):
    """(CGData, how it was made) from an npz of CG arrays or a mapped all-atom .h5 dataset."""
    import numpy as np

    from jaxcg import maps
    from jaxcg._files import reading
    from jaxcg._plausibility import check_force_scale, check_positions_scale, check_temperature
    from jaxcg.data import CGData, integer_pairs, load_dataset

    if args.data.endswith(".npz"):
        with reading(args.data, "--data CG arrays (npz)"), np.load(args.data) as archive:
            missing = {"positions", "forces", "bead_types", "bonds", "temperature"} - set(archive)
            if missing:
                raise ValueError(f"--data {args.data!r} lacks arrays {sorted(missing)} (it has {sorted(archive)})")
            arrays = {k: archive[k] for k in archive}
        positions, forces = (_float_frames(arrays[k], f"--data {args.data!r}: {k}") for k in ("positions", "forces"))
        check_temperature(float(arrays["temperature"]), f"--data {args.data!r}: temperature")
        cg = CGData(
            positions=positions, forces=forces, bead_types=_int_values(arrays["bead_types"], f"--data {args.data!r}: bead_types"),
            bonds=integer_pairs(arrays["bonds"], "bonds", positions.shape[1]),
            temperature=float(arrays["temperature"]), weights=arrays.get("weights"),
        )
        made_from = {"data": args.data}
    else:
        data = load_dataset(args.data)
        linear_map = maps.slice_map(data.topology, args.selection)
        if args.map == "basic":
            linear_map = maps.basic_aggregation_map(linear_map, data.constraints)
        elif args.map == "optimal":
            linear_map = maps.optimal_linear_map(data, linear_map)
        report = maps.check_map(linear_map, data.constraints, raise_on_error=False)
        if not report.valid and not args.allow_invalid_map:
            raise ValueError(
                f"--map {args.map} is not a valid force map for {args.data!r}: "
                + "; ".join(report.problems())
                + ". Use --map basic or --map optimal, or pass --allow-invalid-map to train on it anyway"
            )
        cg = maps.map_dataset(data, linear_map)
        made_from = {"data": args.data, "map": args.map, "selection": args.selection,
                     "masses": np.asarray(cg.masses).tolist()}
    check_positions_scale(cg.positions, "--data positions")
    check_force_scale(cg.positions, cg.forces, cg.temperature, "--data forces")
    return cg, made_from


def _int_values(array, name: str):
    """Integer values (whole floats accepted), anything else refused rather than truncated."""
    import numpy as np

    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.integer) or (np.issubdtype(array.dtype, np.floating)
                                                       and np.all(array == np.round(array)))):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def _float_frames(array, name: str):
    """The CLI's dtype policy: float frames, float16 upcast to float32, integers refused."""
    import numpy as np

    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, got dtype {array.dtype}")
    return array.astype(np.float32) if array.dtype.itemsize < 4 else array


#: `jaxcg train` settings that must match on --resume (``fit`` checks its TrainConfig again).
_TRAIN_RESUME_KEYS = ("data", "map", "selection", "features", "blocks", "rbf", "cutoff", "exclusion_hops", "no_prior",
                      "epochs", "batch_size", "lr", "schedule", "val_fraction", "patience", "seed")


def _train_run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    import jax
    from tqdm import tqdm

    from jaxcg import pipeline, train
    from jaxcg._files import (
        check_writable_folder,
        reading,
        refuse_changed_settings,
        refuse_existing,
    )
    from jaxcg.saved_model import model_spec

    out = Path(args.out)
    try:
        config = train.TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, schedule=args.schedule,
            val_fraction=args.val_fraction, patience=args.patience, seed=args.seed,
        )
        check_writable_folder(out)
        settings = {key: getattr(args, key) for key in _TRAIN_RESUME_KEYS}
        settings_path = out / "train_settings.json"
        if not args.resume:
            refuse_existing([out / "model.npz", out / "checkpoints"], "training output(s)", args.overwrite)
        elif settings_path.exists():
            with reading(settings_path, "training settings"):
                stored = json.loads(settings_path.read_text())
            refuse_changed_settings(out, stored, settings, _TRAIN_RESUME_KEYS)
        paths = [args.data] if isinstance(args.data, str) else list(args.data)
        if len(paths) > 1 and any(path.endswith(".npz") for path in paths):
            raise ValueError("several --data must all be all-atom .h5 datasets (their topologies give the bead types)")
        if len(paths) > 1 and args.exclusion_hops:
            raise ValueError(f"--exclusion-hops must be 0 with several --data, got {args.exclusion_hops}")
        loaded = [_train_load_cg(argparse.Namespace(**{**vars(args), "data": path})) for path in paths]
        cg, made_from = loaded[0]
    except (ValueError, OSError, KeyError, TypeError) as err:
        print(f"jaxcg train: error: {err}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        for name in ("model.npz", "model.json", "energy.py"):  # --overwrite: no stale model beside new checkpoints
            (out / name).unlink(missing_ok=True)
        settings_path.write_text(json.dumps(settings, indent=1))
    spec = pipeline.ModelSpec(features=args.features, blocks=args.blocks, rbf=args.rbf, cutoff=args.cutoff,
                              exclusion_hops=args.exclusion_hops, prior=not args.no_prior)
    done = 0
    if args.resume and (out / "metrics.json").exists():  # the epochs a resumed run has behind it
        try:
            done = min(len(json.loads((out / "metrics.json").read_text())), args.epochs)
        except (OSError, ValueError):
            done = 0
    with tqdm(total=args.epochs, initial=done, unit="epoch", desc="force matching") as bar:
        bar.set_postfix_str("fitting the prior, compiling", refresh=True)

        def progress(epoch: int, step: int, steps: int, metrics: dict | None) -> None:
            if bar.n == 0 and epoch > 0:  # resumed: the bar continues from the epochs already done
                bar.initial = bar.n = epoch
                bar.reset(total=args.epochs)
                bar.initial = bar.n = epoch
            if metrics is None:
                bar.set_postfix(epoch=epoch, step=f"{step}/{steps}", refresh=step == steps or step == 1)
                return
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k != "epoch"})
            bar.update(epoch + 1 - bar.n)

        devices = jax.local_devices()[: args.devices] if args.devices else "auto"
        try:
            if len(loaded) > 1:
                trained = pipeline.train_transferable_model(
                    [c for c, _ in loaded], spec, config, seed=args.seed, out_dir=out, resume=args.resume,
                    progress=progress, devices=devices, overwrite=args.overwrite)
            else:
                trained = pipeline.train_cg_model(
                    cg, spec, config, seed=args.seed, out_dir=out, resume=args.resume, progress=progress,
                    devices=devices, overwrite=args.overwrite,
                )
        except (ValueError, FloatingPointError, OSError) as err:
            print(f"jaxcg train: error: {err}", file=sys.stderr)
            return 2
    extra = {"train": dataclasses.asdict(config)}
    if len(loaded) > 1:
        _save_transferable(out, trained, loaded, spec, extra)
    else:
        if trained.prior is not None and trained.prior.profiles:
            from jaxcg.analysis import plot_prior_profiles

            plot_prior_profiles(trained.prior.profiles, out / "prior_profiles")
        saved = model_spec(cg, trained.prior, spec.features, spec.blocks, spec.rbf, spec.cutoff, spec.exclusion_hops)
        _save_model_folder(out, saved, trained.params, {**extra, "cg": made_from})
    history = trained.result.history
    best = min((row.get("val_loss", row["train_loss"]) for row in history), default=float("nan"))
    print(f"wrote {out} ({len(history)} epochs, best loss {best:.4g} (kJ/mol/nm)^2)")
    return 0


def _save_model_folder(folder, saved: dict, params, extra: dict) -> None:
    """FOLDER/model.json + model.npz (``save_model``) and FOLDER/energy.py for `jaxcg simulate`."""
    from jaxcg.saved_model import save_model

    save_model(folder, saved, params, extra=extra, overwrite=True)
    (folder / "energy.py").write_text(
        '"""Energy of the CG model trained here, for `jaxcg simulate --energy energy.py:energy`."""\n'
        "from pathlib import Path\n\nfrom jaxcg.saved_model import load_energy\n\n\n"
        "def energy(filter_table=None):\n"
        "    return load_energy(Path(__file__).resolve().parent, filter_table=filter_table)\n"
    )


def _save_transferable(out, trained, loaded: list, spec, extra: dict) -> None:
    """OUT/model.json (the shared vocabulary, the molecules) + model.npz (the SchNet), and one
    OUT/molecule_K/ per training molecule: its prior + the shared SchNet, a plain saved model."""
    import dataclasses

    from jaxcg.saved_model import MODEL_FORMAT_VERSION, model_spec, save_model

    model = trained.model
    folders = []
    for k, (cg, made_from) in enumerate(loaded):
        typed = dataclasses.replace(cg, bead_types=trained.vocabulary.types(cg.topology))
        saved = model_spec(typed, trained.priors[k], spec.features, spec.blocks, spec.rbf, spec.cutoff, 0)
        _, params = trained.molecule(k)
        _save_model_folder(out / f"molecule_{k}", {**saved, "n_types": model.n_types}, params,
                           {**extra, "cg": made_from})
        folders.append({"folder": f"molecule_{k}", **made_from})
    description = {"format_version": MODEL_FORMAT_VERSION, "transferable": True, "vocabulary": trained.vocabulary.to_json(), "n_beads": model.n_max,
                   "features": spec.features, "blocks": spec.blocks, "rbf": spec.rbf, "cutoff": spec.cutoff,
                   "molecules": folders}
    save_model(out, description, trained.params, extra=extra, overwrite=True)


def _add_simulate_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg simulate ...`: CG Langevin dynamics of many replicas (jaxcg.simulate)."""
    parser = subparsers.add_parser(
        "simulate",
        help="CG Langevin/Brownian dynamics of many replicas with jax-md",
        description="Simulate R replicas of a CG model at once; frames go to OUT/trajectory.dcd "
        "(all replicas side by side, topology OUT/replicas.pdb; one replica: OUT/topology.pdb), "
        "a CSV log per chunk to OUT/log.csv, stopped replicas to OUT/report.json, and the state "
        "to OUT/state.npz after each chunk (--resume continues from it).",
    )
    parser.add_argument(
        "--energy", required=True,
        help="MODULE:FUNCTION or FILE.py:FUNCTION; FUNCTION() returns energy(x (N, 3) nm) -> "
        "kJ/mol with the model's parameters bound (e.g. functools.partial(model.energy, params)); "
        "or FILE, a potential written by `jaxcg export`",
    )
    parser.add_argument("--start", required=True,
                        help="starting frames: any mdtraj trajectory (with --top) or an npz with "
                        "'positions' (T, N, 3) nm and optionally 'masses' (N,) amu")
    parser.add_argument("--top", default=None, help="topology of --start (pdb, ...)")
    parser.add_argument("--select", default=None,
                        help="mdtraj atom selection applied to --start, e.g. 'name CA'")
    parser.add_argument("--mass", type=float, default=None,
                        help="bead mass in amu for every bead (default: npz 'masses', else 100)")
    parser.add_argument("--replicas", type=int, default=64, help="R (default 64)")
    parser.add_argument("--steps", type=int, required=True, help="steps to run")
    parser.add_argument("--dt", type=float, default=0.002, help="timestep, ps (default 0.002)")
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps (default 1)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--integrator", choices=["langevin", "brownian"], default="langevin")
    parser.add_argument("--temperatures", type=float, nargs="+", default=None, metavar="T",
                        help="parallel tempering: a ladder of temperatures in K, ascending (replaces "
                        "--temperature); --replicas copies at each, Metropolis exchanges between "
                        "neighbours, frames of temperature T in OUT/T<T>K/, acceptance per pair in "
                        "OUT/report.json")
    parser.add_argument("--exchange-every", type=int, default=None, metavar="N",
                        help="with --temperatures: steps between exchange rounds (the chunk length, "
                        "a multiple of --save-every; default --chunk)")
    parser.add_argument("--save-every", type=int, default=100, help="steps between frames")
    parser.add_argument("--chunk", type=int, default=1000,
                        help="steps per jitted chunk, a multiple of --save-every")
    parser.add_argument("--force-bound", type=float, default=1.0e4,
                        help="kJ/mol/nm; a replica with a larger force is stopped")
    parser.add_argument("--filter-table", type=int, default=None, metavar="K",
                        help="tabulate the SchNet's filters on K grid intervals (e.g. 256; "
                        "FUNCTION(filter_table=K) must accept it, as the energy.py written by "
                        "`jaxcg train` does): faster, with a small force error")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/state.npz (the settings must match OUT/settings.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in OUT")
    parser.set_defaults(func=_simulate_run)


def _simulate_load_energy(spec: str, filter_table: int | None = None):
    import importlib
    import importlib.util
    import inspect
    from pathlib import Path

    from jaxcg.export import load_exported, metadata_path

    if metadata_path(spec).exists():  # an artefact of `jaxcg export`
        if filter_table is not None:
            raise ValueError(f"--filter-table does not apply to the exported potential {spec!r}")
        return load_exported(spec)
    target, _, name = spec.rpartition(":")
    if not target or not name:
        hint = " or a file written by `jaxcg export`" if Path(spec).exists() else ""
        raise ValueError(f"--energy must be MODULE:FUNCTION, FILE.py:FUNCTION{hint}, got {spec!r}")
    if target.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location("_jaxcg_energy", target)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"--energy: cannot import {target!r}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    function = getattr(module, name)
    if filter_table is None:
        return function()
    if "filter_table" not in inspect.signature(function).parameters:
        raise ValueError(f"--filter-table: {spec} takes no filter_table= argument")
    return function(filter_table=filter_table)


def _simulate_start(args: argparse.Namespace):
    import mdtraj as md
    import numpy as np

    from jaxcg._files import reading
    from jaxcg._plausibility import check_positions_scale

    masses = None
    if args.start.endswith(".npz"):
        if args.top is None:
            raise ValueError("--top is required with an npz --start (the CG topology, e.g. pdb)")
        with reading(args.start, "--start file (npz)"), np.load(args.start) as archive:
            if "positions" not in archive:
                raise ValueError(f"--start {args.start!r} has no array 'positions' (it has {sorted(archive)})")
            positions = _float_frames(archive["positions"], f"--start {args.start!r}: positions")
            masses = np.asarray(archive["masses"], np.float64) if "masses" in archive else None
        if positions.ndim == 2:
            positions = positions[None]
        if positions.ndim != 3 or positions.shape[-1] != 3 or positions.shape[0] == 0:
            raise ValueError(f"--start {args.start!r}: positions must have shape (T, N, 3) nm, got {positions.shape}")
        with reading(args.top, "--top topology"):
            topology = md.load_topology(args.top)
        if topology.n_atoms != positions.shape[1]:
            raise ValueError(f"--top {args.top!r} has {topology.n_atoms} atoms but --start positions have {positions.shape[1]}")
        if masses is not None and masses.shape != (positions.shape[1],):
            raise ValueError(f"--start {args.start!r}: masses must have shape ({positions.shape[1]},), got {masses.shape}")
    else:
        with reading(args.start, "--start trajectory"):
            traj = md.load(args.start, top=args.top) if args.top else md.load(args.start)
        if args.select:
            traj = traj.atom_slice(_selected_atoms(traj.topology, args.select, "--select", "--start"))
        positions, topology = traj.xyz, traj.topology
    check_positions_scale(positions, f"--start {args.start!r}")
    if args.mass is not None or masses is None:
        masses = np.full(positions.shape[1], 100.0 if args.mass is None else args.mass)
    return positions, topology, masses


#: `jaxcg simulate` settings that must match between a run and its --resume.
_SIMULATE_RESUME_KEYS = ("energy", "start", "top", "select", "mass", "replicas", "dt", "friction", "temperature",
                         "integrator", "save_every", "chunk", "force_bound", "filter_table", "seed",
                         "temperatures", "exchange_every")


def _tempering_folder(temperature: float) -> str:
    """Sub-folder of `jaxcg simulate --temperatures` for one temperature (K): T300K, T412.5K."""
    return f"T{temperature:g}K"


def _check_energy_beads(energy, positions, args: argparse.Namespace) -> None:
    """Refuse --start frames whose bead count differs from the model's (``energy.n_beads`` or a trace)."""
    import jax

    n_beads = getattr(energy, "n_beads", None)
    if n_beads is not None and positions.shape[1] != n_beads:
        raise ValueError(f"--start {args.start!r} has {positions.shape[1]} beads but the model of --energy "
                         f"{args.energy!r} has {n_beads}")
    try:
        jax.eval_shape(energy, jax.ShapeDtypeStruct(positions.shape[1:], positions.dtype))
    except (ValueError, TypeError, IndexError) as err:
        raise ValueError(f"--energy {args.energy!r} does not accept one --start frame of shape "
                         f"{positions.shape[1:]}: {err}") from err


def _simulate_outputs_check(args, out, checkpoint, settings_path, settings: dict, outputs: list) -> None:
    """Refuse an unwritable --out, a finished run's ``outputs`` without --overwrite, and a --resume
    without a checkpoint or with changed settings (every differing key named)."""
    import json

    from jaxcg._files import (
        check_writable_folder,
        reading,
        refuse_changed_settings,
        refuse_existing,
    )

    check_writable_folder(out)
    if args.resume:
        if not checkpoint.exists():
            raise ValueError(f"--resume: {str(checkpoint)!r} does not exist; run without --resume first")
        if settings_path.exists():
            with reading(settings_path, "simulation settings"):
                stored = json.loads(settings_path.read_text())
            refuse_changed_settings(out, stored, settings, _SIMULATE_RESUME_KEYS)
    else:
        refuse_existing(outputs, "simulation output(s)", args.overwrite)


def _simulate_build(args, temperature: float, steps_per_chunk: int):
    """(simulator, start positions (T, N, 3) nm, topology) from --energy, --start and the
    integrator options; temperature in K."""
    from jaxcg import simulate

    energy = _simulate_load_energy(args.energy, args.filter_table)
    positions, topology, masses = _simulate_start(args)
    _check_energy_beads(energy, positions, args)
    build = simulate.langevin if args.integrator == "langevin" else simulate.brownian
    sim = build(energy, masses, temperature, args.dt, args.friction, steps_per_chunk, args.save_every,
                force_bound=args.force_bound)
    return sim, positions, topology


def _simulate_run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import jax
    from tqdm import tqdm

    from jaxcg import simulate
    from jaxcg._plausibility import check_temperature

    out = Path(args.out)
    checkpoint, settings_path = out / "state.npz", out / "settings.json"
    settings = {key: getattr(args, key) for key in _SIMULATE_RESUME_KEYS}
    if args.temperatures is None and args.exchange_every is not None:
        print("jaxcg simulate: error: --exchange-every needs --temperatures", file=sys.stderr)
        return 2
    if args.temperatures is not None:
        return _simulate_tempering(args)
    try:
        check_temperature(args.temperature, "--temperature")
        _simulate_outputs_check(args, out, checkpoint, settings_path, settings,
                                [out / n for n in ("trajectory.dcd", "state.npz", "log.csv")])
        sim, positions, topology = _simulate_build(args, args.temperature, args.chunk)
        if args.resume:
            state, frames = simulate.resume_state(sim, checkpoint)
            if state.alive.shape[0] != args.replicas:
                raise ValueError(f"--replicas {args.replicas} but {str(checkpoint)!r} holds {state.alive.shape[0]} replicas")
    except (ValueError, OSError, ImportError, AttributeError, TypeError) as err:
        print(f"jaxcg simulate: error: {err}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        simulate.trim_log(out / "log.csv", int(state.step))
    else:
        for name in ("log.csv", "report.json", "state.npz"):
            (out / name).unlink(missing_ok=True)
        settings_path.write_text(json.dumps(settings, indent=1))
        key_start, key_sim = jax.random.split(jax.random.key(args.seed))
        start = simulate.initial_positions(positions, args.replicas, key_start)
        state, frames = sim.init(key_sim, start), None
    remaining = max(0, args.steps - int(state.step))
    with simulate.TrajectoryWriter(out, topology, state.alive.shape[0], reference_positions=positions[0],
                                   resume_frames=frames, overwrite=True) as writer, \
            tqdm(total=args.steps, initial=min(int(state.step), args.steps), unit="step",
                 desc=f"{args.integrator} x{state.alive.shape[0]}") as bar:
        bar.set_postfix_str("compiling the first chunk", refresh=True)
        first_step = bar.n

        def progress(done: int, info: dict) -> None:
            bar.set_postfix(alive=info["alive"], U=f"{info['potential_mean']:.1f}", refresh=False)
            bar.update(first_step + min(done, remaining) - bar.n)

        state, report = simulate.run(sim, state, remaining, writer=writer,
                                     log_path=out / "log.csv", checkpoint_path=checkpoint,
                                     callback=progress)
    simulate.save_report(out / "report.json", report, sim.save_every,
                         extra={"dt_ps": args.dt, "save_every": args.save_every,
                                "temperature_K": args.temperature})
    for stopped in report.stopped:
        print(f"replica {stopped.replica} stopped at step {stopped.step}", file=sys.stderr)
    if report.all_stopped:
        last = max(stopped.step for stopped in report.stopped)
        print(f"jaxcg simulate: error: all {len(report.stopped)} replicas stopped (NaN/inf or a force above "
              f"--force-bound {args.force_bound} kJ/mol/nm) by step {last}; the run ended early at step "
              f"{int(state.step)} of {args.steps}. Frames before each stop are kept in {out}; try a smaller "
              "--dt or check the model", file=sys.stderr)
        return 3
    print(f"wrote {out} ({int(state.step)} steps, {len(report.stopped)} replicas stopped)")
    return 0


def _simulate_tempering(args: argparse.Namespace) -> int:
    """`jaxcg simulate --temperatures ...`: parallel tempering, one sub-folder per temperature."""
    import json
    from pathlib import Path

    import jax
    import numpy as np
    from tqdm import tqdm

    from jaxcg import simulate
    from jaxcg._plausibility import check_temperature

    out = Path(args.out)
    checkpoint, settings_path = out / "state.npz", out / "settings.json"
    settings = {key: getattr(args, key) for key in _SIMULATE_RESUME_KEYS}
    temperatures = list(args.temperatures)
    folders = [out / _tempering_folder(t) for t in temperatures]
    chunk = args.chunk if args.exchange_every is None else args.exchange_every
    try:
        for t in temperatures:
            check_temperature(t, "--temperatures")
        if chunk < 1 or chunk % args.save_every:
            raise ValueError(f"--exchange-every ({chunk}) must be a positive multiple of --save-every "
                             f"({args.save_every})")
        _simulate_outputs_check(args, out, checkpoint, settings_path, settings,
                                [checkpoint, out / "log.csv", *(f / "trajectory.dcd" for f in folders)])
        sim, positions, topology = _simulate_build(args, temperatures[0], chunk)
        ladder = simulate.replica_exchange(sim, temperatures, args.replicas)
        if args.resume:
            state, frames = simulate.resume_tempering(ladder, checkpoint)
    except (ValueError, OSError, ImportError, AttributeError, TypeError) as err:
        print(f"jaxcg simulate: error: {err}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        simulate.trim_log(out / "log.csv", int(state.sim.step))
    else:
        for name in ("log.csv", "report.json", "state.npz"):
            (out / name).unlink(missing_ok=True)
        for folder in folders:
            (folder / "report.json").unlink(missing_ok=True)
        settings_path.write_text(json.dumps(settings, indent=1))
        key_start, key_sim = jax.random.split(jax.random.key(args.seed))
        start = simulate.initial_positions(positions, args.replicas, key_start)
        state, frames = ladder.init(key_sim, start), None
    remaining = max(0, args.steps - int(state.sim.step))
    writers = []
    try:
        for folder in folders:
            writers.append(simulate.TrajectoryWriter(folder, topology, args.replicas, reference_positions=positions[0],
                                                     resume_frames=frames, overwrite=True))
        with tqdm(total=remaining, unit="step", desc=f"tempering {len(temperatures)}x{args.replicas}") as bar:

            def progress(done: int, info: dict) -> None:
                rates = [v for k, v in info.items() if k.startswith("acceptance_")]
                bar.set_postfix(alive=info["alive"], acceptance=" ".join(f"{r:.2f}" for r in rates), refresh=False)
                bar.update(min(done, remaining) - bar.n)

            state = simulate.run_tempering(ladder, state, remaining, writers=writers, log_path=out / "log.csv",
                                           checkpoint_path=checkpoint, callback=progress)
    finally:
        for writer in writers:
            writer.close()
    stopped_at = np.asarray(state.sim.stopped_at).reshape(len(temperatures), args.replicas)
    for t, folder, stops in zip(temperatures, folders, stopped_at, strict=True):
        report = simulate.RunReport(int(state.sim.step), [simulate.StoppedReplica(int(m), int(stops[m]))
                                                          for m in np.flatnonzero(stops >= 0)], 0, 0.0)
        simulate.save_report(folder / "report.json", report, args.save_every,
                             extra={"dt_ps": args.dt, "save_every": args.save_every, "temperature_K": t})
    simulate.save_tempering_report(out / "report.json", ladder, state,
                                   extra={"dt_ps": args.dt, "save_every": args.save_every, "exchange_every": chunk})
    rates = ", ".join(f"{a:g}-{b:g} K: {r:.2f}" for a, b, r in
                      zip(temperatures, temperatures[1:], ladder.acceptance(state), strict=False))
    n_stopped = int((stopped_at >= 0).sum())
    if not bool(np.asarray(state.sim.alive).any()):
        print(f"jaxcg simulate: error: all {n_stopped} replicas stopped (NaN/inf or a force above --force-bound "
              f"{args.force_bound} kJ/mol/nm); the run ended early at step {int(state.sim.step)} of {args.steps}",
              file=sys.stderr)
        return 3
    print(f"wrote {out} ({int(state.sim.step)} steps, {len(temperatures)} temperatures x {args.replicas} replicas, "
          f"{n_stopped} stopped; exchange acceptance {rates})")
    return 0


def _add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg export MODEL_DIR --out FILE`: the trained potential as a jax.export artefact."""
    parser = subparsers.add_parser(
        "export",
        help="write a trained model's potential as a jax.export artefact (loadable with plain JAX)",
        description="Write energy_and_forces(positions (batch, N, 3) nm) -> (energy (batch,) kJ/mol, forces "
        "(batch, N, 3) kJ/mol/nm) of the model in MODEL_DIR (a `jaxcg train` folder) to FILE, a serialized "
        "jax.export.Exported with a symbolic batch size, and its metadata (units, bead types, n_beads, "
        "temperature, shapes) to FILE.json. Load with jax.export.deserialize; `jaxcg simulate --energy FILE` "
        "simulates it.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="folder written by `jaxcg train`")
    parser.add_argument("--out", required=True, metavar="FILE", help="artefact to write, e.g. model.jaxexport")
    parser.add_argument("--platforms", nargs="+", default=["cpu", "cuda"],
                        help="platforms to lower for (default: cpu cuda)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    parser.set_defaults(func=_export_run)


def _export_run(args: argparse.Namespace) -> int:
    from jaxcg.export import export_potential, metadata_path

    try:
        metadata = export_potential(args.model_dir, args.out, platforms=args.platforms, overwrite=args.overwrite)
    except (ValueError, OSError, KeyError) as err:
        print(f"jaxcg export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({metadata['n_beads']} beads, platforms {' '.join(metadata['platforms'])}) and "
          f"{metadata_path(args.out)}")
    return 0


def _add_analyze_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg analyze ...`: PMFs, FES, TICA against the reference (jaxcg.analysis)."""
    parser = subparsers.add_parser(
        "analyze",
        help="compare CG dynamics with the all-atom reference: PMFs, FES, TICA, folded fraction",
        description="Histogram the same CG coordinates of the reference and of a CG simulation; "
        "write PMF/FES figures (PNG and SVG) and metrics.json (KL, free-energy MSE, W1, folded "
        "fractions) to OUT.",
    )
    parser.add_argument("--reference", required=True,
                        help="reference frames: a jaxcg dataset (.h5) or any mdtraj trajectory")
    parser.add_argument("--reference-top", default=None, help="topology of a trajectory --reference")
    parser.add_argument("--select", default="name CA",
                        help="mdtraj selection mapping reference atoms to beads (default 'name CA'; "
                        "'all' if the reference is already CG)")
    parser.add_argument("--simulation", required=True, nargs="+",
                        help="folder(s) written by `jaxcg simulate` (replicas concatenated)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="K (default: the dataset's, else 300)")
    parser.add_argument("--distance", type=int, nargs=2, action="append", metavar=("I", "J"),
                        help="bead pair for a distance PMF (repeatable; default first-last)")
    parser.add_argument("--phi", type=int, nargs=4, metavar="B", help="4 beads of the 1st dihedral")
    parser.add_argument("--psi", type=int, nargs=4, metavar="B", help="4 beads of the 2nd dihedral")
    parser.add_argument("--tica-lag", type=int, default=None,
                        help="TICA lag (reference frames) over all pair distances; 0 or unset: none")
    parser.add_argument("--folded", default=None,
                        help="folded reference structure (pdb; --select applied) for folded fractions")
    parser.add_argument("--rmsd-cutoff", type=float, default=0.1, help="nm (default 0.1)")
    parser.add_argument("--bins", type=int, default=60, help="bins per axis (default 60)")
    parser.add_argument("--min-frames", type=int, default=20,
                        help="refuse a reference or simulation with fewer frames (default 20)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(func=_analyze_run)


def _analyze_reference(args: argparse.Namespace):
    """Reference bead positions (T, N, 3) nm and the temperature (K)."""
    import mdtraj as md

    from jaxcg._files import reading
    from jaxcg._plausibility import check_temperature
    from jaxcg.data import load_dataset

    temperature = args.temperature
    if temperature is not None:
        check_temperature(temperature, "--temperature")
    if args.reference.endswith((".h5", ".hdf5")):
        data = load_dataset(args.reference)
        traj = md.Trajectory(data.positions, data.topology)
        temperature = data.temperature if temperature is None else temperature
    else:
        with reading(args.reference, "--reference trajectory"):
            traj = md.load(args.reference, top=args.reference_top) if args.reference_top else md.load(args.reference)
    if args.select and args.select != "all":
        traj = traj.atom_slice(_selected_atoms(traj.topology, args.select, "--select", "--reference"))
    return traj.xyz, float(300.0 if temperature is None else temperature)


def _analyze_run(args: argparse.Namespace) -> int:

    import numpy as np

    from jaxcg._files import check_writable_folder
    from jaxcg.simulate import load_replicas
    from jaxcg.units import kT_from_temperature

    try:
        check_writable_folder(args.out)
        reference, temperature = _analyze_reference(args)
        runs = [t.xyz for folder in args.simulation for t in load_replicas(folder)]
        _note_stopped_replicas(args.simulation)
        cg = np.concatenate([r for r in runs if len(r)]) if any(len(r) for r in runs) else None
        if cg is None:
            raise ValueError(f"the simulation folder(s) {args.simulation} hold no frames")
        if cg.shape[1] != reference.shape[1]:
            raise ValueError(
                f"the simulation has {cg.shape[1]} beads but the reference selection "
                f"{args.select!r} gives {reference.shape[1]}"
            )
        for name, frames in (("--reference", reference), ("--simulation", cg)):
            if len(frames) < args.min_frames:
                raise ValueError(
                    f"{name} has {len(frames)} frames (after dropping those of stopped replicas), fewer "
                    f"than --min-frames {args.min_frames}: too few for PMFs and divergences"
                )
    except (ValueError, OSError) as err:
        print(f"jaxcg analyze: error: {err}", file=sys.stderr)
        return 2
    try:
        path = _analyze_metrics(args, reference, cg, kT_from_temperature(temperature), temperature)
    except ValueError as err:
        print(f"jaxcg analyze: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} and figures in {args.out}")
    return 0


def _note_stopped_replicas(folders: list[str]) -> None:
    """Say on stderr how many replicas of each simulation folder had stopped (their later frames
    are left out of the analysis)."""
    import json
    from pathlib import Path

    for folder in folders:
        report = Path(folder) / "report.json"
        if report.exists():
            stopped = json.loads(report.read_text()).get("stopped", [])
            if stopped:
                print(f"jaxcg analyze: note: {len(stopped)} replica(s) of {folder} stopped early; only their "
                      "frames before the stop are analysed", file=sys.stderr)


def _analyze_metrics(args: argparse.Namespace, reference, cg, kT: float, temperature: float):
    """PMFs, FES, TICA and folded fractions of ``reference`` and ``cg`` (T, N, 3) nm to OUT."""
    from pathlib import Path

    import numpy as np

    from jaxcg import analysis

    out = Path(args.out)
    metrics: dict = {"temperature_K": temperature, "reference_frames": len(reference),
                     "cg_frames": len(cg)}
    for i, j in args.distance or [(0, reference.shape[1] - 1)]:
        name = f"distance_{i}_{j}"
        pair = np.array([[i, j]])
        ref_d = analysis.pair_distances(reference, pair)[:, 0]
        cg_d = analysis.pair_distances(cg, pair)[:, 0]
        both = np.concatenate([ref_d, cg_d])
        edges = np.linspace(max(both.min() - 0.02, 1e-3), both.max() + 0.02, args.bins + 1)
        metrics[name], ref_pmf, cg_pmf = analysis.compare_1d(ref_d, cg_d, edges, kT, jacobian="r2")
        analysis.plot_pmfs({"reference": ref_pmf, "CG": cg_pmf}, out / name,
                           xlabel=f"distance {i}-{j} / nm", title=f"PMF of beads {i}-{j}")
    if args.phi and args.psi:
        edges = np.linspace(-np.pi, np.pi, args.bins + 1)
        quads = np.array([args.phi, args.psi])
        surfaces = {}
        for label, frames in (("reference", reference), ("CG", cg)):
            angles = analysis.dihedrals(frames, quads)
            surfaces[label] = analysis.fes_2d(angles[:, 0], angles[:, 1], edges, edges, kT)
        metrics["phi_psi"] = analysis.compare_2d(surfaces["reference"], surfaces["CG"])
        analysis.plot_fes(surfaces, out / "fes_phi_psi")
    if args.tica_lag:
        pairs = np.stack(np.triu_indices(reference.shape[1], 1), axis=1)
        ref_tica, (cg_tica,) = analysis.tica_projection(
            analysis.pair_distances(reference, pairs), [analysis.pair_distances(cg, pairs)],
            lagtime=args.tica_lag, dim=2,
        )
        both = np.concatenate([ref_tica, cg_tica])
        xe = np.linspace(both[:, 0].min(), both[:, 0].max(), args.bins + 1)
        ye = np.linspace(both[:, 1].min(), both[:, 1].max(), args.bins + 1)
        surfaces = {label: analysis.fes_2d(p[:, 0], p[:, 1], xe, ye, kT)
                    for label, p in (("reference", ref_tica), ("CG", cg_tica))}
        metrics["tica"] = analysis.compare_2d(surfaces["reference"], surfaces["CG"])
        metrics["tica"]["wasserstein1_tic1"] = analysis.wasserstein_1d(ref_tica[:, 0], cg_tica[:, 0])
        analysis.plot_fes(surfaces, out / "fes_tica", xlabel="TIC 1", ylabel="TIC 2")
    if args.folded:
        import mdtraj as md

        from jaxcg._files import reading

        with reading(args.folded, "--folded structure"):
            folded = md.load(args.folded)
        if args.select and args.select != "all":
            folded = folded.atom_slice(folded.topology.select(args.select))
        metrics["folded_fraction"] = {
            label: analysis.folded_fraction(frames, folded.xyz[0], args.rmsd_cutoff)
            for label, frames in (("reference", reference), ("CG", cg))
        }
        metrics["folded_fraction"]["rmsd_cutoff_nm"] = args.rmsd_cutoff
    return analysis.save_metrics(out / "metrics.json", metrics)


def _add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    """`jaxcg evaluate ...`: judge a trained model by what it samples (jaxcg.evaluate)."""
    parser = subparsers.add_parser(
        "evaluate",
        help="simulate a trained model for long and compare its free-energy surface with the reference",
        description="Run R replicas of the model in OUT/ (Langevin, started from reference frames), "
        "histogram two dihedrals of the CG beads, and report KL(reference || CG) with its sampling "
        "error (two halves of the replicas), its drift (first vs second half of the run), the "
        "fraction of time in bins the reference never visits and the stopped replicas. Writes "
        "OUT/evaluation.json, OUT/fes.png|svg and OUT/cg_frames.npz. A CG model is judged by what "
        "it samples, not by its loss.",
    )
    parser.add_argument("--model", required=True, help="folder written by `jaxcg train`")
    parser.add_argument("--reference", required=True,
                        help="all-atom jaxcg dataset (.h5), ideally a long run independent of the training data")
    parser.add_argument("--selection", default=None,
                        help="mdtraj selection of the bead atoms in --reference (default: the model's)")
    parser.add_argument("--phi", type=int, nargs=4, metavar="B", default=None,
                        help="beads of the first dihedral (default 0 1 2 3)")
    parser.add_argument("--psi", type=int, nargs=4, metavar="B", default=None,
                        help="beads of the second dihedral (default 1 2 3 4)")
    parser.add_argument("--replicas", type=int, default=100, help="R (default 100)")
    parser.add_argument("--steps", type=int, default=50_000,
                        help="steps per replica (default 50,000: 100 ps at 2 fs, 10 ns over 100 replicas)")
    parser.add_argument("--dt", type=float, default=0.002, help="timestep, ps (default 0.002)")
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps (default 1)")
    parser.add_argument("--save-every", type=int, default=50, help="steps between frames (default 50)")
    parser.add_argument("--bins", type=int, default=36, help="bins per dihedral (default 36, 10 degrees)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in OUT")
    parser.set_defaults(func=_evaluate_run)


def _evaluate_run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import jax
    import numpy as np
    from tqdm import tqdm

    from jaxcg import analysis, evaluate
    from jaxcg._files import check_writable_folder, refuse_existing
    from jaxcg.data import load_dataset
    from jaxcg.saved_model import load_energy

    try:
        check_writable_folder(Path(args.out))
        refuse_existing([Path(args.out) / "evaluation.json"], "evaluation", args.overwrite, resume_hint=False)
        model_json = Path(args.model) / "model.json"
        if not model_json.exists():
            raise ValueError(f"--model {args.model!r} holds no model.json: not a folder written by `jaxcg train`")
        saved = json.loads(model_json.read_text())
        made_from = saved.get("cg", {})
        selection = args.selection or made_from.get("selection")
        if selection is None:
            raise ValueError("--selection is required: the model does not record the bead selection")
        n_beads = len(saved["bead_types"])
        data = load_dataset(args.reference)
        atoms = _selected_atoms(data.topology, selection, "--selection", "--reference")
        if len(atoms) != n_beads:
            raise ValueError(f"--selection {selection!r} picks {len(atoms)} atoms of --reference but the model "
                             f"has {n_beads} beads")
        quads = np.array([args.phi or [0, 1, 2, 3], args.psi or [1, 2, 3, 4]])
        if quads.max() >= n_beads or quads.min() < 0:
            raise ValueError(f"--phi/--psi must index the model's {n_beads} beads, got {quads.tolist()}")
        masses = np.asarray(made_from.get("masses") or np.full(n_beads, 100.0))
        energy = load_energy(args.model)
    except (ValueError, OSError, KeyError) as err:
        print(f"jaxcg evaluate: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    edges = np.linspace(-np.pi, np.pi, args.bins + 1)
    temperature = float(saved["temperature"])
    with tqdm(total=args.steps, unit="step", desc=f"evaluate x{args.replicas}") as bar:
        bar.set_postfix_str("compiling the first chunk", refresh=True)
        report, surfaces, positions = evaluate.evaluate_model(
            energy, data.positions[:, atoms], lambda x: analysis.dihedrals(x, quads), (edges, edges),
            masses, temperature, args.replicas, args.steps, jax.random.key(args.seed), dt=args.dt,
            friction=args.friction, save_every=args.save_every,
            progress=lambda done, total: (bar.set_postfix_str("", refresh=False), bar.update(min(done, total) - bar.n)),
        )
    settings = {k: v for k, v in vars(args).items() if k != "func"} | {"selection": selection,
                                                                     "dihedrals": quads.tolist()}
    analysis.save_metrics(out / "evaluation.json", {"report": report.as_dict(), "settings": settings})
    np.savez_compressed(out / "cg_frames.npz", positions=positions.astype(np.float32))
    analysis.plot_fes(surfaces, out / "fes", xlabel=f"dihedral {quads[0].tolist()} / rad",
                      ylabel=f"dihedral {quads[1].tolist()} / rad")
    print(f"KL(reference || CG) {report.kl:.4f} nats (replica halves {report.kl_replica_halves[0]:.4f}, "
          f"{report.kl_replica_halves[1]:.4f}); first/second half {report.kl_time_halves[0]:.4f}/"
          f"{report.kl_time_halves[1]:.4f}; {100 * report.unvisited_fraction:.2f}% of time where the reference "
          f"never goes; {len(report.stopped)} of {report.n_replicas} replicas stopped; "
          f"{report.simulated_ns:.1f} ns")
    if report.drifting:
        print("warning: the model drifts away from the reference as it runs (second-half KL exceeds the "
              "first by more than twice the sampling error)", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def _add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="water dimer end to end: slice/basic/optimal maps, trained PMFs, figure, report"
    )
    parser.add_argument("--out", default="demo-output", help="output folder")
    parser.add_argument("--steps", type=int, default=20000, help="Adam steps per map's potential")
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from jaxcg.demo import run_demo

    return run_demo(out=args.out, steps=args.steps)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcg", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(subparsers)
    _add_reference_parser(subparsers)
    _add_train_parser(subparsers)
    _add_simulate_parser(subparsers)
    _add_analyze_parser(subparsers)
    _add_evaluate_parser(subparsers)
    _add_export_parser(subparsers)
    for name in _RECORDED:
        subparsers.choices[name].add_argument(
            "--config", default=None, metavar="FILE.toml",
            help=f"read options from a TOML file (command-line options win); every run writes its "
            f"resolved settings to OUT/jaxcg-{name}.toml (OUT.toml beside an .h5 output) to repeat it",
        )
    return parser


#: Commands whose resolved settings are written beside their output.
_RECORDED = ("reference", "train", "simulate", "evaluate")


def main(argv: list[str] | None = None) -> int:
    from jaxcg.run_config import parse_with_config, resolved_path, write_resolved

    # One XLA device per CPU core (unless XLA_FLAGS says otherwise): training and simulation
    # shard their batches and replicas over them. Must precede JAX's first computation.
    use_host_devices()
    import warnings

    parser = build_parser()
    args = parse_with_config(parser, list(sys.argv[1:] if argv is None else argv))
    format_warning = warnings.formatwarning
    # One line per warning, "jaxcg CMD: warning: ...", not the source line of the library call.
    warnings.formatwarning = lambda message, category, *rest, **kw: (
        f"jaxcg {args.command}: warning: {message}\n" if category.__module__.startswith("jaxcg")
        else format_warning(message, category, *rest, **kw))
    try:
        code = int(args.func(args) or 0)
    except KeyboardInterrupt:
        # Writers close in their context managers on the way out (frames, logs and checkpoints
        # up to the last completed chunk or epoch are on disk).
        sys.stdout.flush()
        hint = "; continue with --resume" if "resume" in vars(args) else ""
        print(f"\njaxcg {args.command}: interrupted{hint}", file=sys.stderr, flush=True)
        code = 130
    finally:
        warnings.formatwarning = format_warning
    if args.command in _RECORDED and code in (0, 130):
        # the settings of the output that now exists (a refused run leaves the earlier record alone)
        try:
            write_resolved(args, resolved_path(args))
        except OSError as err:
            print(f"jaxcg {args.command}: warning: cannot record the settings: {err}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
