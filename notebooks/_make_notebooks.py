"""Write the tutorial notebooks (outputs stripped). Run: python notebooks/_make_notebooks.py

Every notebook reads JAXCG_NOTEBOOK_FAST=1 (set by the test suite) to run with small settings.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
FAST = 'import os\nFAST = os.environ.get("JAXCG_NOTEBOOK_FAST") == "1"  # the test suite runs small settings\n'


def write(name: str, cells: list) -> None:
    notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(notebook, HERE / name)


water = [
    new_markdown_cell(
        "# 01 · Water dimer: slice, basic and optimal force maps\n\n"
        "Two TIP3P waters simulated with OpenMM at 300 K (bundled with jaxcg), coarse-grained to one bead per "
        "oxygen. We build three force maps, check their validity, measure their noise, train an RBF pair "
        "potential on each map's forces, and compare the learned PMFs with the all-atom one. This is the first "
        "experiment of Krämer et al. (arXiv 2302.07071). Units: nm, kJ/mol."
    ),
    new_code_cell(FAST + "import numpy as np\nimport jaxcg\nfrom jaxcg.reference import bundled_dataset\n\n"
                  "flexible = bundled_dataset('water_dimer_flexible')\nrigid = bundled_dataset('water_dimer_rigid')\n"
                  "print(flexible.n_frames, 'frames,', flexible.n_atoms, 'atoms, kT =', round(flexible.kT, 3), 'kJ/mol')\n"
                  "print('rigid constraints (atom pairs):', rigid.constraints.tolist())"),
    new_markdown_cell("## The three maps\nThe configurational map keeps the oxygens. The force maps differ:"),
    new_code_cell("from jaxcg.experiments.water_dimer import oxygen_maps\n\n"
                  "for name, data in [('flexible', flexible), ('rigid', rigid)]:\n"
                  "    maps = oxygen_maps(data, data)\n"
                  "    for map_name, m in maps.items():\n"
                  "        report = jaxcg.check_map(m, data.constraints, raise_on_error=False)\n"
                  "        noise = float(jaxcg.mean_squared_mapped_force(m, data.forces)) / m.n_beads\n"
                  "        print(f'{name:8} {map_name:8} valid={report.valid!s:5}  <|f|^2>/bead = {noise:10.4g} (kJ/mol/nm)^2  G[0] =', np.round(np.asarray(m.force[0]), 3))"),
    new_markdown_cell("Under constraints the slice map is invalid: the O–H constraint forces leak into the oxygen's force. "
                      "The optimal map of the flexible dimer learns to sum each water's three atoms, which cancels the stiff "
                      "intramolecular forces and cuts the noise by about 100×."),
    new_markdown_cell("## Learned PMFs\nAn RBF pair potential is force-matched to each map's forces with Adam."),
    new_code_cell("from jaxcg.experiments.water_dimer import plot_water_dimer_pmfs, reference_pmf, run_water_dimer\n\n"
                  "steps = 2000 if FAST else 20000\n"
                  "n_train = 2000 if FAST else 10000\n"
                  "panels = {}\n"
                  "for name, data in [('flexible', flexible), ('rigid', rigid)]:\n"
                  "    reference = reference_pmf(data)\n"
                  "    results = run_water_dimer(data, n_train=n_train, steps=steps, reference=reference)\n"
                  "    panels[name] = (reference, results)\n"
                  "    print(name, {r.name: round(r.rmse, 2) for r in results}, 'kJ/mol RMSE')\n"
                  "files = plot_water_dimer_pmfs(panels, 'water_dimer_pmfs')\n"),
    new_code_cell("from IPython.display import Image\nImage(str(files[0]))"),
]

maps = [
    new_markdown_cell(
        "# 03 · Force maps explained\n\n"
        "A configurational map M (N beads × n atoms, rows sum to 1) gives CG positions x = M r; a force map G gives CG "
        "forces f = G F. G is valid when (i) G Mᵀ = I and (ii) the atoms of every constraint group get equal weights. "
        "We look at the maps of alanine dipeptide (OpenMM, vacuum, HBonds constraints, bundled) as matrices."
    ),
    new_code_cell(FAST + "import numpy as np\nimport matplotlib.pyplot as plt\nimport jaxcg\nfrom jaxcg.reference import bundled_dataset\n\n"
                  "data = bundled_dataset('alanine_dipeptide_vacuum')\n"
                  "if FAST:\n    data = data.subset(slice(0, 4000))\n"
                  "names = [f'{a.residue.name}{a.residue.index}-{a.name}' for a in data.topology.atoms]\n"
                  "print(data.n_frames, 'frames;', len(data.constraints), 'constrained pairs; groups:', jaxcg.constraint_groups(data.constraints, data.n_atoms))"),
    new_code_cell("backbone = jaxcg.slice_map(data.topology, 'backbone')  # N, CA, C of each residue (caps included)\n"
                  "maps = {\n"
                  "    'slice': backbone,\n"
                  "    'basic': jaxcg.basic_aggregation_map(backbone, data.constraints),\n"
                  "    'optimal': jaxcg.optimal_linear_map(data, backbone, data.constraints),\n"
                  "}\n"
                  "fig, axes = plt.subplots(len(maps), 1, figsize=(9, 7), layout='constrained')\n"
                  "for ax, (name, m) in zip(axes, maps.items()):\n"
                  "    g = np.asarray(m.force)\n"
                  "    bound = np.abs(g).max()\n"
                  "    im = ax.imshow(g, cmap='RdBu_r', vmin=-bound, vmax=bound, aspect='auto')\n"
                  "    ax.set_title(f'{name} force map G'); ax.set_ylabel('bead')\n"
                  "    ax.set_xticks(range(data.n_atoms)); ax.set_xticklabels(names, rotation=90, fontsize=6)\n"
                  "    fig.colorbar(im, ax=ax)\n"),
    new_markdown_cell("## Validity and noise\n`check_map` reports the deviations; the noise is the mean squared mapped force per bead."),
    new_code_cell("for name, m in maps.items():\n"
                  "    report = jaxcg.check_map(m, data.constraints, raise_on_error=False)\n"
                  "    per_bead = np.asarray(jaxcg.mean_squared_mapped_force(m, data.forces, per_bead=True))\n"
                  "    print(f'{name:8} valid={report.valid!s:5} |GM^T-I|={report.consistency:.1e} spread={report.constraint_spread:.1e} '\n"
                  "          f'<|f|^2>/bead = {per_bead.mean():.4g}')\n"),
    new_markdown_cell("## Streaming and the KKT solve\nThe optimal map only needs the force second moment, accumulated over chunks: the trajectory is never held whole."),
    new_code_cell("chunks = ((data.positions[s:s + 1000], data.forces[s:s + 1000]) for s in range(0, data.n_frames, 1000))\n"
                  "streamed = jaxcg.optimal_linear_map(chunks, backbone, data.constraints)\n"
                  "print('max difference to the in-memory map:', float(np.abs(np.asarray(streamed.force) - np.asarray(maps['optimal'].force)).max()))"),
]

alanine = [
    new_markdown_cell(
        "# 02 · Alanine dipeptide end to end\n\n"
        "All-atom OpenMM data (amber14, vacuum, HBonds constraints, 300 K, bundled) → five backbone beads "
        "C N CA C N that carry φ and ψ → slice, basic and optimal force maps → Boltzmann-inversion prior + SchNet "
        "trained on delta forces → CG Langevin dynamics → Ramachandran free-energy surface vs the all-atom one. "
        "Code: `jaxcg.experiments.alanine`; the full run is `benchmarks/paper_alanine.py`. Units: nm, ps, kJ/mol."
    ),
    new_code_cell(FAST + "import jax\nimport numpy as np\nfrom jaxcg.reference import bundled_dataset\n"
                  "from jaxcg.experiments import alanine\n\n"
                  "data = bundled_dataset('alanine_dipeptide_vacuum')\n"
                  "if FAST:\n    data = data.subset(slice(0, 6000))\n"
                  "n_test = 2000 if FAST else 4000\n"
                  "train, test = data.subset(slice(0, data.n_frames - n_test)), data.subset(slice(data.n_frames - n_test, None))\n"
                  "print(data.n_frames, 'frames;', data.n_atoms, 'atoms;', len(data.constraints), 'constrained pairs')"),
    new_markdown_cell("## Maps\nThe optimal map is fitted on the training frames; noise (E‖f‖² per bead) is measured on the held-out ones."),
    new_code_cell("maps = alanine.backbone_maps(data, train)\n"
                  "for row in alanine.map_table(maps, data, test):\n"
                  "    print(f\"{row['map']:8} valid={row['valid']!s:5} <|f|^2>/bead = {row['mean_sq_force_per_bead']:.4g} \"\n"
                  "          f\"({row['ratio_to_slice']:.2f} x slice)\")"),
    new_markdown_cell("Slice is invalid: N–H and CA–HA are constrained, and the sliced forces miss the constraint forces. "
                      "Basic sums each constraint group; the optimal map spreads weights over the molecule to cancel noise."),
    new_markdown_cell("## Train prior + SchNet and score on a common target\n"
                      "Each model is scored on held-out frames against the **optimal** map's forces, so the residual is "
                      "the optimal map's noise plus the model's PMF error, comparable across maps."),
    new_code_cell("from jaxcg.train import TrainConfig\n\n"
                  "names = ['optimal'] if FAST else ['slice', 'basic', 'optimal']\n"
                  "n_train = 1000 if FAST else 8000\n"
                  "config = TrainConfig(epochs=2 if FAST else 20, batch_size=64, patience=None)\n"
                  "spec = alanine.ModelSpec(features=32, blocks=1, rbf=16) if FAST else alanine.ModelSpec()\n"
                  "cgs = alanine.cg_datasets(data, {name: maps[name] for name in set(names) | {'optimal'}})\n"
                  "held_out = np.arange(data.n_frames - n_test, data.n_frames)\n"
                  "frames = np.sort(np.random.default_rng(0).permutation(data.n_frames - n_test)[:n_train])\n"
                  "models = {}\n"
                  "for name in names:\n"
                  "    models[name] = alanine.train_model(cgs[name].subset(frames), config, spec)\n"
                  "    r = alanine.holdout_residual(models[name], cgs['optimal'].positions[held_out], cgs['optimal'].forces[held_out])\n"
                  "    print(f'{name:8} hold-out residual vs optimal forces: {r:.4g} (kJ/mol/nm)^2 per bead')"),
    new_markdown_cell("## CG simulation and Ramachandran surface"),
    new_code_cell("from jaxcg.analysis import compare_2d, plot_fes\n\n"
                  "reference = alanine.reference_ramachandran(data)\n"
                  "surfaces = {'all-atom': reference}\n"
                  "for name, trained in models.items():\n"
                  "    x = alanine.simulate(trained, cgs[name].subset(frames), n_replicas=8 if FAST else 32,\n"
                  "                         n_steps=1000 if FAST else 50000, key=jax.random.PRNGKey(0))\n"
                  "    surfaces[f'{name} CG'] = alanine.ramachandran(x, data.kT)\n"
                  "    print(name, {k: round(v, 3) for k, v in compare_2d(reference, surfaces[f'{name} CG']).items()})\n"
                  "files = plot_fes(surfaces, 'alanine_fes', size=(3.4 * len(surfaces), 3.0), vmax=30.0, dpi=70)"),
    new_code_cell("from IPython.display import Image\nImage(str(files[0]))"),
]

ENERGY_FILE = '''import jax.numpy as jnp


def energy():
    def u(r):  # r: (1, 3) nm -> kJ/mol
        x, y, z = r[0]
        return ({BARRIER!r} * ((x / {A!r}) ** 2 - 1.0) ** 2 + {TILT!r} * x
                + 0.5 * {K!r} * ((y - x) ** 2 + z ** 2))
    return u
'''

tempering = [
    new_markdown_cell(
        "# 04 · Parallel tempering: a temperature ladder across a barrier\n\n"
        "One bead in a 2-D double well whose barrier is 12 kT at 300 K: plain Langevin dynamics at 300 K stays in "
        "the well it starts in, so its free-energy surface is wrong however long it runs. Parallel tempering "
        "(replica exchange) runs copies at a ladder of temperatures and, after every chunk of steps, swaps the "
        "configurations of neighbouring temperatures with the Metropolis probability "
        "min(1, exp((β_i − β_j)(U_i − U_j))). The hot replicas cross the barrier and hand their configurations "
        "down, so the 300 K replicas sample both wells with the Boltzmann weights. Everything runs through the "
        "command line, `jaxcg simulate --temperatures ... --exchange-every N`. Units: nm, ps, kJ/mol, K."
    ),
    new_code_cell(FAST + "import json\nfrom pathlib import Path\n\nimport mdtraj as md\nimport numpy as np\n"
                  "from jaxcg.units import kT_from_temperature\n\n"
                  "KT = kT_from_temperature(300.0)  # kJ/mol\n"
                  "BARRIER, A, TILT, K = 12.0 * KT, 0.1, KT / 0.2, 2000.0  # kJ/mol, nm, kJ/mol/nm, kJ/mol/nm^2\n"
                  "# U(x, y, z), kJ/mol: wells at (-A, -A) (1 kT lower) and (A, A) joined by a valley along y = x;\n"
                  "# written as the energy for `jaxcg simulate --energy double_well.py:energy`\n"
                  f"Path('double_well.py').write_text(f'''{ENERGY_FILE}''')\n"
                  "topology = md.Topology()\n"
                  "topology.add_atom('B', md.element.carbon, topology.add_residue('B', topology.add_chain()))\n"
                  "start = np.array([[[A, A, 0.0]]], np.float32)  # every replica starts in the upper (right) well\n"
                  "md.Trajectory(start, topology).save_pdb('bead.pdb')\n"
                  "np.savez('start.npz', positions=start, masses=np.full(1, 12.0))"),
    new_markdown_cell(
        "## The ladder and a plain run\n"
        "Five temperatures spaced roughly geometrically, 8 copies at each (40 replicas in one compiled chunk), an "
        "exchange round every 100 steps; then plain Langevin at 300 K with as many replicas and steps. In a shell:\n\n"
        "```bash\n"
        "jaxcg simulate --energy double_well.py:energy --start start.npz --top bead.pdb --replicas 8 \\\n"
        "    --temperatures 300 500 850 1450 2500 --exchange-every 100 \\\n"
        "    --dt 0.004 --friction 10 --save-every 10 --steps 100000 --out tempering\n"
        "```"
    ),
    new_code_cell("from jaxcg.cli import main\n\n"
                  "ladder = [300, 500, 850, 1450, 2500]\n"
                  "common = ['--energy', 'double_well.py:energy', '--start', 'start.npz', '--top', 'bead.pdb',\n"
                  "          '--dt', '0.004', '--friction', '10', '--save-every', '10', '--steps', '10000' if FAST else '100000']\n"
                  "assert main(['simulate', *common, '--replicas', '8', '--temperatures', *map(str, ladder),\n"
                  "             '--exchange-every', '100', '--out', 'tempering']) == 0\n"
                  "assert main(['simulate', *common, '--replicas', str(8 * len(ladder)), '--temperature', '300',\n"
                  "             '--out', 'plain']) == 0\n"
                  "print(sorted(p.name for p in Path('tempering').iterdir()))"),
    new_markdown_cell(
        "## Acceptance per pair\n"
        "`tempering/report.json` holds the exchanges accepted and attempted per neighbouring pair, `tempering/log.csv` "
        "the running rate after every chunk. A pair near 0 would cut the ladder in two; 0.2–0.4 is the customary "
        "target, so this one-bead ladder could lose a rung."
    ),
    new_code_cell("import csv\n\nimport matplotlib.pyplot as plt\n\n"
                  "report = json.loads(Path('tempering/report.json').read_text())\n"
                  "for pair in report['pairs']:\n"
                  "    low, high = pair['temperatures_K']\n"
                  "    print(f\"{low:>6g} - {high:<6g} K: {pair['accepted']:4d} of {pair['attempted']:4d} accepted \"\n"
                  "          f\"({pair['acceptance']:.2f})\")\n"
                  "with open('tempering/log.csv') as handle:\n"
                  "    rows = list(csv.DictReader(handle))\n"
                  "fig, ax = plt.subplots(figsize=(5, 3), layout='constrained')\n"
                  "for k, (low, high) in enumerate(zip(ladder, ladder[1:])):\n"
                  "    ax.plot([float(r['time_ps']) for r in rows], [float(r[f'acceptance_{k}_{k + 1}']) for r in rows],\n"
                  "            label=f'{low}-{high} K')\n"
                  "ax.set_xlabel('time / ps'); ax.set_ylabel('acceptance so far'); ax.set_ylim(0, 1); ax.legend(fontsize=7)"),
    new_markdown_cell(
        "## Free-energy surfaces per temperature\n"
        "Each temperature's trajectories sit in their own folder (`tempering/T300K/`, ...), as a plain "
        "`jaxcg simulate` writes them: `jaxcg.simulate.load_replicas` reads them, `jaxcg analyze --simulation "
        "tempering/T300K` analyses one. F(x, y) = −kT ln p(x, y) at each temperature:"
    ),
    new_code_cell("from jaxcg import simulate\nfrom jaxcg.analysis import fes_2d, plot_fes\n\n\n"
                  "def frames(folder):\n"
                  "    \"\"\"(frames, 3) nm: the bead's positions over all replicas of a run folder.\"\"\"\n"
                  "    return np.concatenate([r.xyz[:, 0] for r in simulate.load_replicas(folder)])\n\n\n"
                  "edges = np.linspace(-0.2, 0.2, 41)\n"
                  "surfaces = {}\n"
                  "for t in ladder:\n"
                  "    r = frames(f'tempering/T{t}K')\n"
                  "    surfaces[f'{t} K'] = fes_2d(r[:, 0], r[:, 1], edges, edges, kT_from_temperature(t))\n"
                  "files = plot_fes(surfaces, 'tempering_fes', xlabel='x / nm', ylabel='y / nm', vmax=40.0,\n"
                  "                 size=(2.9 * len(surfaces), 2.6), dpi=70)"),
    new_code_cell("from IPython.display import Image\nImage(str(files[0]))"),
    new_markdown_cell(
        "## The 300 K replicas against the exact Boltzmann distribution\n"
        "Along x the exact marginal is p(x) ∝ exp(−(BARRIER ((x/A)² − 1)² + TILT x) / kT) (the y and z springs "
        "integrate to constants). Tempering finds the lower, left well; plain Langevin at the same temperature "
        "barely leaves the right one."
    ),
    new_code_cell("from jaxcg.analysis import kl_divergence\n\n"
                  "x_edges = np.linspace(-0.16, 0.16, 33)\n"
                  "x = np.linspace(-0.16, 0.16, 32001)\n"
                  "weight = np.exp(-(BARRIER * ((x / A) ** 2 - 1.0) ** 2 + TILT * x) / KT)\n"
                  "exact = np.histogram(x, x_edges, weights=weight)[0] / weight.sum()\n"
                  "centers = 0.5 * (x_edges[1:] + x_edges[:-1])\n"
                  "fig, ax = plt.subplots(figsize=(5, 3), layout='constrained')\n"
                  "ax.plot(centers, exact, 'k-', label='exact')\n"
                  "for label, folder in [('tempering, 300 K', 'tempering/T300K'), ('plain Langevin, 300 K', 'plain')]:\n"
                  "    x_run = frames(folder)[:, 0]\n"
                  "    counts = np.histogram(x_run, x_edges)[0]\n"
                  "    ax.plot(centers, counts / counts.sum(), 'o-', ms=3, label=label)\n"
                  "    print(f'{label:22} left-well share {np.mean(x_run < 0):.2f} (exact {exact[:16].sum():.2f}), '\n"
                  "          f'KL to exact {kl_divergence(exact, counts):.3f}')\n"
                  "ax.set_xlabel('x / nm'); ax.set_ylabel('probability per bin'); ax.legend(fontsize=7)"),
]

if __name__ == "__main__":
    write("01_water_dimer.ipynb", water)
    write("02_alanine_dipeptide.ipynb", alanine)
    write("03_force_maps_explained.ipynb", maps)
    write("04_parallel_tempering.ipynb", tempering)
