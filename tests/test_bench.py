"""``funcnn bench``: the real code path (kernels, model steps, table, JSON, roofline PNG) on a
tiny setting; no assertion depends on a timing's value."""
import json

import pytest

from funcnn import bench
from funcnn.bench import report
from funcnn.cli import main

TINY = bench.Setting("quick", (32, 64), 1 << 12, (("mlp", 8, 4), ("lstm", 4, 3)), 2, 0.0)
ROW_FIELDS = {"name", "kind", "flops", "bytes", "median_ms", "iqr_ms", "best_ms", "compile_ms", "gflops",
              "pct_of_peak", "intensity", "rounds"}


@pytest.mark.slow
def test_bench_quick_writes_json_and_roofline(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "QUICK", TINY)
    out = tmp_path / "b"
    assert main(["bench", "--quick", "--no-peers", "--out", str(out)]) == 0
    result = json.loads((out / "bench.json").read_text())
    assert (out / "roofline.png").stat().st_size > 1000 and "| case |" in (out / "bench.md").read_text()
    assert {"setting", "date", "machine", "load_average", "versions", "backend", "device_kind", "peak", "kernels", "steps",
            "autotune"} <= set(result)
    assert result["setting"]["name"] == "quick" and result["setting"]["models"] == [["mlp", 8, 4], ["lstm", 4, 3]]
    kinds = [r["kind"] for r in result["kernels"]]
    assert kinds.count("gemm") == 2 and {"stream", "conv", "recurrent", "attention"} <= set(kinds)
    steps = {(r["model"], r["contender"]) for r in result["steps"]}
    assert steps == {("mlp", "funcnn manual"), ("mlp", "funcnn autodiff"), ("lstm", "funcnn manual"),
                     ("lstm", "funcnn autodiff")}
    peak = result["peak"]["measured_gemm_gflops"]
    for row in result["kernels"] + result["steps"]:
        assert ROW_FIELDS <= set(row), row["name"]
        assert row["rounds"] == 2 and row["median_ms"] > 0 and row["compile_ms"] > 0 and row["flops"] > 0
        assert row["gflops"] == pytest.approx(row["flops"] / row["median_ms"] * 1e-6)
        assert row["pct_of_peak"] == pytest.approx(100 * row["gflops"] / peak)
    for row in result["steps"]:
        assert row["bytes"] is None and row["intensity"] is None  # steps: no byte count, not on the roofline
    gemm = next(r for r in result["kernels"] if r["name"] == "gemm 64x64x64")
    assert gemm["flops"] == 2 * 64 ** 3 and gemm["bytes"] == 3 * 4 * 64 * 64
    assert peak == pytest.approx(max(r["flops"] / r["best_ms"] * 1e-6 for r in result["kernels"] if r["kind"] == "gemm"))
    for row in result["steps"]:
        if row["contender"] == "funcnn manual":
            assert row["ratio_to_manual"] == 1.0
    text = capsys.readouterr().out
    assert "| mlp step, funcnn manual |" in text and "% of peak" in text and "wrote" in text


def test_bench_refuses_a_non_empty_out(tmp_path, capsys):
    (tmp_path / "x").write_text("keep")
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out: expected a new or empty folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # nothing written


def test_published_peaks():
    assert report.published_peak("NVIDIA H200")["bf16_tflops"] == 989.0
    assert report.published_peak("NVIDIA H100 80GB HBM3")["bf16_tflops"] == 989.0
    assert report.published_peak("NVIDIA H100 PCIe")["bf16_tflops"] == 756.0
    assert report.published_peak("cpu") is None


def test_step_flops_follow_the_model_flops_convention():
    """3x the forward's product FLOPs, counted by hand; for the MLP (no loop, no padding) the
    hand count is XLA's own count of the forward less the bias adds and ReLUs (< 1% here)."""
    import jax
    import jax.numpy as jnp

    from funcnn.bench import steps

    assert steps.forward_flops("mlp", 8, 4) == 2 * 8 * (16 * 512 + 512 * 512 + 512 * 10)
    assert steps.forward_flops("lstm", 2, 5) == 2 * 2 * (5 * 129 * 512 + 128 * 10)
    assert steps.forward_flops("cnn", 2, 8) == 2 * 2 * (64 * 9 * 32 + 16 * 9 * 32 * 64 + 4 * 64 * 10)
    net, shape = steps.model("mlp", 4)
    params, state = net.init(jax.random.key(0), shape)
    cost = jax.jit(lambda p, x: net.apply(p, state, x)[0]).lower(params, jnp.ones((8, *shape))).cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    hand = steps.forward_flops("mlp", 8, 4)
    assert hand <= xla <= 1.01 * hand
