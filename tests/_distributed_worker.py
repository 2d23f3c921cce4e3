"""One process of the multi-process training test (tests/test_distributed.py):

    python tests/_distributed_worker.py FRAMES OUT_DIR RESULT COORDINATOR NUM_PROCESSES PROCESS_ID [STOP [RESUME]]

trains the RBF pair potential of ``model_and_config`` on the frames file with
``jaxcg.train.fit`` and, in process 0, writes the final parameters and history to RESULT (npz).
STOP: exit after that many epochs (a killed run); RESUME=1: continue from OUT_DIR's checkpoints.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def model_and_config():
    """The model, its initial parameters and the TrainConfig shared with the one-process runs."""
    import jax.numpy as jnp

    from jaxcg.models import RBFPairPotential
    from jaxcg.train import TrainConfig

    model = RBFPairPotential(n_beads=4, n_basis=8, r_min=0.1, r_max=0.7)
    params = {"coefficients": jnp.asarray(np.linspace(-3.0, 3.0, 8), jnp.float32)}
    config = TrainConfig(epochs=3, batch_size=16, learning_rate=0.05, schedule="cosine", patience=None,
                         val_fraction=0.25, n_blocks=4, seed=7)
    return model, params, config


def main(frames: str, out_dir: str, result: str, coordinator: str, num_processes: int, process_id: int,
         stop: int | None = None, resume: bool = False) -> None:
    from jaxcg import distributed

    distributed.initialize(coordinator, num_processes, process_id, timeout_s=60)
    import jax

    from jaxcg.train import fit

    def progress(epoch, step, steps, metrics):
        if metrics is not None and epoch + 1 == stop:  # after the epoch's checkpoint
            raise SystemExit(0)

    model, params, config = model_and_config()
    with distributed.FrameFile(frames) as source:
        out = fit(model.energy, params, source, None, config, out_dir=out_dir, resume=resume, progress=progress)
    if jax.process_index() == 0:
        leaves = {f"params_{k}": np.asarray(v) for k, v in enumerate(jax.tree.leaves(out.state.params))}
        np.savez(result, devices=len(jax.devices()), history=json.dumps(out.history), **leaves)
    distributed.shutdown()


if __name__ == "__main__":
    extra = sys.argv[7:]
    main(*sys.argv[1:5], int(sys.argv[5]), int(sys.argv[6]), int(extra[0]) if extra else None,
         len(extra) > 1 and extra[1] == "1")
