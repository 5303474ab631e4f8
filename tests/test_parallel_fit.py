"""fit(mesh=...) on 1, 2, 4, 8 devices, the shard_map gradient and lm.train_lm(mesh=...) on
1, 2, 4 devices, in a subprocess (``tests/parallel_worker.py``, see ``tests/parallel_run.py``)."""
from __future__ import annotations

import json

import pytest

from helpers import RTOL_F32, RTOL_F64
from parallel_run import run


@pytest.mark.slow
def test_fit_on_1_2_4_8_devices_and_the_shard_map_gradient():
    proc = run("parallel_worker.py", "fit", "shard_map", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checks = json.loads(proc.stdout.strip().splitlines()[-1])
    # the same seed gives the same parameters, BatchNorm state and losses on any device count
    for devices in (1, 2, 4, 8):
        for what in ("params", "state", "history"):
            err = checks[f"fit/{devices}/Explicit/{what}"]
            assert err <= RTOL_F32, f"{devices} devices, {what}: relative error {err:.3e}"
    assert checks["fit/bad_batch_size"] == (
        "fit: batch_size must be divisible by the 4 data shards of the mesh, got 10")
    # shard_map (per-shard hand-written backward, then pmean) equals the mesh path
    found = {k: v for k, v in checks.items() if k.startswith("shard_map/")}
    assert set(found) == {"shard_map/mlp/manual", "shard_map/mlp/autodiff", "shard_map/cnn/manual"}
    for name, err in found.items():
        assert err <= RTOL_F64, f"{name}: relative error {err:.3e}"


@pytest.mark.slow
def test_train_lm_on_1_2_4_devices_gives_the_parameters_of_one_device():
    proc = run("parallel_worker.py", "lm", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checks = json.loads(proc.stdout.strip().splitlines()[-1])
    # the same seed draws the same batches on any device count: the same parameters and losses
    for devices in (1, 2, 4):
        assert checks[f"lm/sgd/{devices}/steps"] == [3, 6]
        for what in ("params", "history"):
            err = checks[f"lm/sgd/{devices}/{what}"]
            assert err <= RTOL_F32, f"{devices} devices, {what}: relative error {err:.3e}"
    # Adam: all but the attention key biases, whose gradient is zero up to rounding (README, Limits)
    for what in ("params_but_key_bias", "history"):
        err = checks[f"lm/adam/4/{what}"]
        assert err <= RTOL_F32, f"adam, 4 devices, {what}: relative error {err:.3e}"
    assert checks["lm/bad_batch_size"] == ("train_lm: batch_size must be divisible by the 4 data shards of the mesh, "
                                           "got 6")
