import os
import sys
import tempfile
from pathlib import Path

# JAX's persistent compilation cache: the programs a test compiles (the checker's, the
# layers') are kept on disk between runs of the suite, so a developer's second run skips
# most compiling (a check of an LSTM: ~6 s of CPU cold, ~1.7 s warm). Subprocesses inherit
# it. Keyed by JAX on the program, the backend and the versions; set
# JAX_COMPILATION_CACHE_DIR yourself to move it, or to "" to switch it off.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(tempfile.gettempdir()) / f"funcnn-jax-cache-{os.getuid()}"))
# Every program is kept, however fast it compiled: the suite's subprocesses (training runs,
# kills, resumes, several processes of one run) compile the same small programs again, and load
# them from disk instead (tests/test_faults.py + test_runs.py, cache cold, 2 runs each:
# 66-73 s with every program kept, 77 s with those that compiled in 0.1 s or more).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Compiling is most of the suite's time, not running: a test runs its programs a few times
# on small shapes. So the suite asks XLA:CPU to compile fast rather than emit fast code: its
# elemental emitters instead of the fusion emitters, no expensive LLVM passes, backend
# optimization level 0 (together 394 s -> 131 s for the GPT, conv, recurrent, transformer and
# precision tests, compile cache off), and each program's LLVM module compiled whole instead of
# split for threads (test_gpt + test_check_gallery + test_precision, cache cold, 2 runs each:
# 153 -> 133 s of CPU, 81-90 -> 71 s wall). The arithmetic is IEEE float either way; rounding may
# differ in the last bit, as between CPUs, which every tolerance here allows. (The checker
# compiles its convolution programs at level 3 whatever these say: funcnn.check.core.)
# Subprocesses inherit these; a flag of your own in XLA_FLAGS wins.
SUITE_XLA_FLAGS = {"xla_cpu_use_fusion_emitters": "false", "xla_llvm_disable_expensive_passes": "true",
                   "xla_backend_optimization_level": "0", "xla_cpu_parallel_codegen_split_count": "1"}
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", "")] + [
    f"--{flag}={value}" for flag, value in SUITE_XLA_FLAGS.items()
    if flag not in os.environ.get("XLA_FLAGS", "")]).strip()

import jax  # noqa: E402  (after the cache settings, which JAX reads at import)
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py: the tolerance rule

# No test depends on a timing: the autotuner's measured choices (funcnn.core.autotune) are
# replaced by each op's fallback everywhere (subprocesses inherit this), except in
# tests/test_autotune.py, whose fixture clears it and drives the mechanism with a fake
# timer. Measuring conv candidates costs tens of seconds per shape on 2 loaded cores.
os.environ.setdefault("FUNCNN_AUTOTUNE", "0")


@pytest.fixture
def key():
    return jax.random.key(0)


def pytest_collection_modifyitems(items):
    """The files with the most slow tests run first (each file's tests kept together and in
    order, so module fixtures are built once): pytest-xdist hands tests out in this order, and
    a long test handed out last would run alone while the other worker idles. pyproject's
    ``--dist worksteal`` lets a worker that runs out take the other's queued tests (with
    ``load``, tests already queued stayed put: one worker idled the last ~55 s of the suite)."""
    slow: dict = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])
