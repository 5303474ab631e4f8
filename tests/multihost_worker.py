"""One process of the multi-host test (``tests/test_parallel_multihost.py``): ``python
tests/multihost_worker.py DEVICES COORDINATOR NUM_PROCESSES PROCESS_ID OUT.npz`` sets
DEVICES CPU devices and joins the program (``funcnn.training.distributed.setup``, as ``funcnn train
--devices --coordinator --num-processes --process-id`` does; gloo collectives), trains a
tiny MLP for two epochs (``fit``) and a tiny GPT for four steps (``lm.train_lm``) on a mesh
over the devices of every process, and, on process 0 only, writes the final parameters
(the GPT's keyed ``gpt...``). With NUM_PROCESSES 0 it runs alone (no ``jax.distributed``),
the reference."""
from __future__ import annotations

import sys

import jax
import numpy as np
import optax

from funcnn import layers as L
from funcnn import losses, models
from funcnn.data import text
from funcnn.training import lm, distributed
from funcnn.core.layer import serial
from funcnn.training.fit import fit


def _leaves(tree, prefix=""):
    return {prefix + jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def main(devices, coordinator, num_processes, process_id, out):
    if num_processes:
        mesh = distributed.setup(devices, coordinator, num_processes, process_id)
    else:
        mesh = distributed.setup(devices)
    k_x, k_y = jax.random.split(jax.random.key(7))
    x = np.asarray(jax.random.normal(k_x, (64, 5)))
    y = np.asarray(jax.random.randint(k_y, (64,), 0, 3), np.int32)
    model = serial(L.Dense(8), L.BatchNorm(), L.Tanh(), L.Dropout(0.2), L.Dense(3))
    result = fit(model, losses.softmax_cross_entropy, optax.sgd(0.1, momentum=0.9), (x, y), epochs=2,
                 batch_size=16, key=jax.random.key(0), progress=False, mesh=mesh)
    corpus = text.load_pydoc(0)
    gpt = lm.train_lm(models.gpt(corpus.vocab_size, context=8, layers=1, heads=2, width=16), corpus, context=8,
                      steps=4, batch_size=8, optimizer=optax.sgd(0.1, momentum=0.9), eval_every=2, eval_windows=4,
                      mesh=mesh)
    print(f"process {jax.process_index()} of {jax.process_count()}: {len(jax.devices())} devices, "
          f"loss {result.history['loss']}, gpt validation loss {gpt.history['val_loss']}", flush=True)
    if jax.process_index() == 0:
        np.savez(out, **_leaves((result.params, result.state)), **_leaves(gpt.params, "gpt"))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
