"""Multi-host data parallelism: two local processes of two CPU devices each, gloo
collectives (``tests/multihost_worker.py``), against one process of four devices."""
from __future__ import annotations

import socket
import subprocess

import numpy as np
from helpers import RTOL_F32, assert_close
from parallel_run import ENV, command, run


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_of_two_devices_end_like_one_process_of_four(tmp_path):
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen(command("multihost_worker.py", 2, coordinator, 2, i, tmp_path / f"p{i}.npz"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for i in range(2)]
    ref = run("multihost_worker.py", 4, "-", 0, 0, tmp_path / "ref.npz", timeout=300)
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
