"""Training: the step, the epoch, the outer loop, ``fit`` and the language-model trainer,
precision policies, data parallelism, checkpoints and run folders."""
from funcnn.training.fit import FitResult as FitResult
from funcnn.training.fit import NonFiniteError as NonFiniteError
from funcnn.training.fit import accuracy as accuracy
from funcnn.training.fit import evaluate as evaluate
from funcnn.training.fit import fit as fit
from funcnn.training.fit import guard_names as guard_names
from funcnn.training.fit import make_epoch as make_epoch
from funcnn.training.fit import make_step as make_step
from funcnn.training.fit import predictor as predictor
from funcnn.training.fit import scan_is_slow as scan_is_slow

__all__ = ["FitResult", "NonFiniteError", "accuracy", "evaluate", "fit", "guard_names", "make_epoch",
           "make_step", "predictor", "scan_is_slow"]
