"""One process of the multi-host test (``tests/test_parallel.py``): ``python
tests/multihost_worker.py DEVICES COORDINATOR NUM_PROCESSES PROCESS_ID OUT.npz`` sets
DEVICES CPU devices and joins the program (``funcnn.parallel.setup``, as ``funcnn train
--devices --coordinator --num-processes --process-id`` does; gloo collectives), trains a
tiny MLP for two epochs on a mesh over the devices of every process, and, on process 0
only, writes the final parameters. With NUM_PROCESSES 0 it runs alone (no
``jax.distributed``), the reference."""
from __future__ import annotations

import sys

import jax
import numpy as np
import optax

from funcnn import layers as L
from funcnn import losses, parallel
from funcnn.layer import serial
from funcnn.train import fit


def main(devices, coordinator, num_processes, process_id, out):
    if num_processes:
        mesh = parallel.setup(devices, coordinator, num_processes, process_id)
    else:
        mesh = parallel.setup(devices)
    k_x, k_y = jax.random.split(jax.random.key(7))
    x = np.asarray(jax.random.normal(k_x, (64, 5)))
    y = np.asarray(jax.random.randint(k_y, (64,), 0, 3), np.int32)
    model = serial(L.Dense(8), L.BatchNorm(), L.Tanh(), L.Dropout(0.2), L.Dense(3))
    result = fit(model, losses.softmax_cross_entropy, optax.sgd(0.1, momentum=0.9), (x, y), epochs=2,
                 batch_size=16, key=jax.random.key(0), progress=False, mesh=mesh)
    leaves = {jax.tree_util.keystr(p): np.asarray(v) for p, v in
              jax.tree_util.tree_leaves_with_path((result.params, result.state))}
    print(f"process {jax.process_index()} of {jax.process_count()}: {len(jax.devices())} devices, "
          f"loss {result.history['loss']}", flush=True)
    if jax.process_index() == 0:
        np.savez(out, **leaves)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
