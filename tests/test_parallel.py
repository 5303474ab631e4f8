"""Data parallelism: the mesh-aware batch contractions (funcnn.core.sharding), funcnn.training.distributed.

The multi-device checks run in a subprocess (``tests/parallel_worker.py``, see
``tests/parallel_run.py``); the one-device checks here.
"""
from __future__ import annotations

import json
import subprocess
import sys

import jax
import pytest
from helpers import RTOL_F64
from parallel_run import ENV, run

from funcnn.training import distributed
from funcnn.cli import main


@pytest.mark.slow
def test_every_backward_agrees_with_autodiff_under_a_mesh():
    """Manual vs autodiff under Explicit (and Auto) axes; the mesh vs one device; the
    parameter gradients replicated (the all-reduce happened). The GPT's layers (the
    embedding's gather and scatter-add over a sharded batch) and a whole GPT included."""
    proc = run("parallel_worker.py", "layers", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checks = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any("/Auto/" in k for k in checks) and any("/Explicit/" in k for k in checks)
    gpt_layers = ("layernorm(B T D)", "embedding", "gelu", "positional_embedding(T<max_len)",
                  "attention(2 heads causal)", "token_dense", "model:gpt")
    assert {f"{name}/Explicit/manual_vs_autodiff" for name in gpt_layers} <= set(checks)
    assert "model:gpt/Explicit/mesh_vs_one_device" in checks
    for name, err in checks.items():
        if name.endswith("/param_grads_replicated"):
            assert err == 0.0, f"{name}: a parameter gradient is sharded"
        else:
            assert err <= RTOL_F64, f"{name}: relative error {err:.3e}"


# in this process (one device)

def test_bad_meshes_and_arguments_raise_one_clear_line():
    with pytest.raises(ValueError, match="data_mesh: num_devices must be an integer in"):
        distributed.data_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="data_mesh: axis_type must be"):
        distributed.data_mesh(1, axis_type="Manual")
    with pytest.raises(ValueError, match="fit: mesh must have a 'data' axis"):
        distributed.data_shards(jax.make_mesh((1,), ("model",)), 8)
    with pytest.raises(TypeError, match="fit: mesh must be a jax.sharding.Mesh"):
        distributed.data_shards("data", 8)
    with pytest.raises(ValueError, match=r"initialize: process_id must be in \[0, 2\)"):
        distributed.initialize("127.0.0.1:1", 2, 2)


@pytest.mark.parametrize("flags,history", [
    (["--data", "xor", "--hidden", "8", "--epochs", "1", "--batch-size", "30"], "loss"),
    (["--model", "gpt", "--data", "pydoc", "--steps", "2", "--context", "8", "--layers", "1", "--heads", "2",
      "--width", "16", "--batch-size", "6", "--eval-every", "2", "--eval-windows", "4"], "val_loss"),
])
@pytest.mark.slow
def test_cli_trains_on_two_devices(tmp_path, flags, history):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "funcnn", "train", "--devices", "2", *flags, "--optimizer", "momentum",
                        "--lr", "0.05", "--out", str(out), "--no-progress"], capture_output=True, text=True,
                       timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["args"]["devices"] == 2 and len(metrics["history"][history]) == 1


@pytest.mark.parametrize("flags,expected", [
    (["--coordinator", "127.0.0.1:1234"], "--coordinator, --num-processes and --process-id: expected all three"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id: expected 0..1, got 2"),
    (["--devices", "4096", "--batch-size", "4096"], "--devices: expected at most the"),
    (["--model", "gpt", "--data", "pydoc", "--devices", "4096", "--batch-size", "4096"],
     "--devices: expected at most the"),
    (["--devices", "2", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "0", "--batch-size", "6"],
     "--batch-size: expected a multiple of the 4 devices (--devices 2 x --num-processes 2), got 6"),
])
def test_cli_refuses_bad_device_flags_in_one_line(tmp_path, capsys, flags, expected):
    jax.devices()  # the backend runs (one device), so --devices cannot change this process's devices
    out = tmp_path / "never"
    code = main(["train", *flags, "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not out.exists()
