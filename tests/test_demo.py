"""The demo and the water-dimer experiment: physics the paper reports, on the bundled data."""

import json

import numpy as np

from jaxcg.cli import main
from jaxcg.experiments.water_dimer import reference_pmf, run_water_dimer
from jaxcg.reference import bundled_dataset


def test_rigid_water_slice_fails_basic_and_optimal_recover_the_pmf():
    data = bundled_dataset("water_dimer_rigid")
    results = {r.name: r for r in run_water_dimer(data, n_train=6000, steps=2000, seed=1)}
    assert results["slice"].rmse > 5.0  # constraint forces leak into the sliced forces
    assert results["basic"].rmse < 1.0 and results["optimal"].rmse < 1.0
    assert results["optimal"].mean_sq_force <= results["basic"].mean_sq_force * (1 + 1e-6)
    assert results["slice"].mean_sq_force > 5 * results["basic"].mean_sq_force


def test_reference_pmf_has_a_minimum_at_the_hydrogen_bond():
    data = bundled_dataset("water_dimer_flexible")
    pmf = reference_pmf(data)
    r_min = pmf.centers[np.nanargmin(pmf.free_energy)]
    assert 0.26 < r_min < 0.31  # TIP3P dimer O–O hydrogen-bond distance ≈ 0.28 nm


def test_demo_command_writes_report_figure_and_json(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "300"]) == 0
    printed = capsys.readouterr().out
    assert "water_dimer_rigid" in printed and "optimal" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    rigid = {row["map"]: row for row in results["water_dimer_rigid"]["maps"]}
    assert rigid["slice"]["valid"] is False and rigid["optimal"]["valid"] is True
    flexible = {row["map"]: row for row in results["water_dimer_flexible"]["maps"]}
    assert flexible["optimal"]["ratio_to_slice"] < 0.1
    png = tmp_path / "water_dimer_pmfs.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![PMFs](water_dimer_pmfs.png)" in (tmp_path / "report.md").read_text()
