"""One process of the multi-host test (``tests/test_parallel.py``): ``python
tests/multihost_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID OUT.npz`` joins the
program through ``funcnn.parallel.initialize`` (gloo on CPU), trains a tiny MLP for two
epochs on a mesh over the devices of every process, and, on process 0 only, writes the
final parameters. With NUM_PROCESSES 0 it runs alone (no ``jax.distributed``) on four
devices, the reference. ``JAX_NUM_CPU_DEVICES`` sets the devices per process."""
from __future__ import annotations

import os
import sys

import jax

jax.config.update("jax_num_cpu_devices", int(os.environ.get("JAX_NUM_CPU_DEVICES", "2")))

import numpy as np  # noqa: E402
import optax  # noqa: E402

from funcnn import layers as L  # noqa: E402
from funcnn import losses, parallel  # noqa: E402
from funcnn.layer import serial  # noqa: E402
from funcnn.train import fit  # noqa: E402


def main(coordinator, num_processes, process_id, out):
    if num_processes:
        parallel.initialize(coordinator, num_processes, process_id)
    k_x, k_y = jax.random.split(jax.random.key(7))
    x = np.asarray(jax.random.normal(k_x, (64, 5)))
    y = np.asarray(jax.random.randint(k_y, (64,), 0, 3), np.int32)
    model = serial(L.Dense(8), L.BatchNorm(), L.Tanh(), L.Dropout(0.2), L.Dense(3))
    result = fit(model, losses.softmax_cross_entropy, optax.sgd(0.1, momentum=0.9), (x, y), epochs=2,
                 batch_size=16, key=jax.random.key(0), progress=False, mesh=parallel.data_mesh())
    leaves = {jax.tree_util.keystr(p): np.asarray(v) for p, v in
              jax.tree_util.tree_leaves_with_path((result.params, result.state))}
    print(f"process {jax.process_index()} of {jax.process_count()}: {len(jax.devices())} devices, "
          f"loss {result.history['loss']}", flush=True)
    if jax.process_index() == 0:
        np.savez(out, **leaves)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
