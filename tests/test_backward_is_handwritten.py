"""Every backward in the library is derived by hand: no autodiff call in layer code."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "funcnn"
LAYER_CODE = sorted(p for d in ("layers", "science/bayes") for p in (ROOT / d).rglob("*.py")) + [ROOT / f for f in (
    "losses.py", "regularization.py", "models.py", "core/combinators.py", "core/dtypes.py", "core/sharding.py",
    "core/layer.py", "training/sampling.py")]
AUTODIFF = re.compile(r"\b(jax\.(grad|vjp|jvp|linearize|value_and_grad|jacfwd|jacrev|hessian)|custom_vjp)\b")


@pytest.mark.parametrize("path", LAYER_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_autodiff_in_layer_code(path):
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
            if AUTODIFF.search(line.split("#")[0]) and not line.strip().startswith(('"', "'", "``"))]
    assert not hits, f"{path.name} calls autodiff:\n" + "\n".join(hits)
