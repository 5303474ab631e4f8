"""Data parallelism (funcnn.parallel, fit(mesh=...), the mesh-aware batch contractions).

The multi-device checks run in subprocesses (``tests/parallel_worker.py``,
``tests/multihost_worker.py``): the number of CPU devices is fixed when JAX's backend
starts, and this pytest process has started it with one device. The rest of the suite
keeps its single default device.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from helpers import RTOL_F32, RTOL_F64, assert_close

from funcnn import layers as L
from funcnn import losses, parallel
from funcnn.layer import serial
from funcnn.train import fit

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}


def _run(args, timeout, **env):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **env})


@pytest.fixture(scope="module")
def checks():
    proc = _run([str(TESTS / "parallel_worker.py"), "layers", "fit", "shard_map"], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _matching(checks, *parts):
    found = {k: v for k, v in checks.items() if all(p in k for p in parts)}
    assert found, f"no check matches {parts}"
    return found


def test_every_backward_agrees_with_autodiff_under_a_mesh(checks):
    for name, err in _matching(checks, "/manual_vs_autodiff").items():
        assert err <= RTOL_F64, f"{name}: relative error {err:.3e}"
    assert any("/Auto/" in k for k in checks) and any("/Explicit/" in k for k in checks)


def test_mesh_gradients_equal_one_device_gradients(checks):
    for name, err in _matching(checks, "/mesh_vs_one_device").items():
        assert err <= RTOL_F64, f"{name}: relative error {err:.3e}"


def test_parameter_gradients_come_back_replicated(checks):
    for name, flag in _matching(checks, "/param_grads_replicated").items():
        assert flag == 0.0, f"{name}: a parameter gradient is sharded"


@pytest.mark.parametrize("devices", [1, 2, 4, 8])
def test_fit_gives_the_same_parameters_on_any_device_count(checks, devices):
    for what in ("params", "state", "history"):
        err = checks[f"fit/{devices}/Explicit/{what}"]
        assert err <= RTOL_F32, f"{devices} devices, {what}: relative error {err:.3e}"


def test_fit_rejects_a_batch_the_shards_do_not_divide(checks):
    assert checks["fit/bad_batch_size"] == (
        "fit: batch_size must be divisible by the 4 data shards of the mesh, got 10")


def test_shard_map_gradient_equals_the_mesh_gradient(checks):
    found = _matching(checks, "shard_map/")
    assert {k.split("/")[1] for k in found} == {"mlp", "cnn", "lstm"}
    for name, err in found.items():
        assert err <= RTOL_F64, f"{name}: relative error {err:.3e}"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_of_two_devices_end_like_one_process_of_four(tmp_path):
    worker = str(TESTS / "multihost_worker.py")
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, worker, coordinator, "2", str(i), str(tmp_path / f"p{i}.npz")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**ENV, "JAX_NUM_CPU_DEVICES": "2"}) for i in range(2)]
    ref = _run([worker, "-", "0", "0", str(tmp_path / "ref.npz")], timeout=300, JAX_NUM_CPU_DEVICES="4")
    outs = []
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert ref.returncode == 0, ref.stderr[-2000:]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert "of 2: 4 devices" in out
    assert not (tmp_path / "p1.npz").exists(), "only process 0 writes"
    got, want = np.load(tmp_path / "p0.npz"), np.load(tmp_path / "ref.npz")
    assert sorted(got) == sorted(want)
    assert_close([got[k] for k in sorted(got)], [want[k] for k in sorted(want)], RTOL_F32)


# in this process (one device)

def test_fit_on_a_one_device_mesh_equals_fit_without_one():
    x = np.asarray(jax.random.normal(jax.random.key(0), (24, 3)))
    y = np.asarray(jax.random.randint(jax.random.key(1), (24,), 0, 2), np.int32)
    model = serial(L.Dense(4), L.Tanh(), L.Dense(2))
    kw = dict(epochs=1, batch_size=8, key=jax.random.key(2), progress=False)
    plain = fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), **kw)
    meshed = fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), mesh=parallel.data_mesh(1), **kw)
    assert_close(meshed.params, plain.params, RTOL_F32)
    assert meshed.history.keys() == plain.history.keys()


def test_bad_meshes_and_arguments_raise_one_clear_line():
    with pytest.raises(ValueError, match="data_mesh: num_devices must be an integer in"):
        parallel.data_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="data_mesh: axis_type must be"):
        parallel.data_mesh(1, axis_type="Manual")
    with pytest.raises(ValueError, match="fit: mesh must have a 'data' axis"):
        parallel.data_shards(jax.make_mesh((1,), ("model",)), 8)
    with pytest.raises(TypeError, match="fit: mesh must be a jax.sharding.Mesh"):
        parallel.data_shards("data", 8)
    with pytest.raises(ValueError, match=r"initialize: process_id must be in \[0, 2\)"):
        parallel.initialize("127.0.0.1:1", 2, 2)
