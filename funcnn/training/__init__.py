"""Training: the step, the epoch, the outer loop, ``fit`` and the language-model trainer,
precision policies, data parallelism, checkpoints and run folders."""
from funcnn.training import checkpoint as checkpoint
from funcnn.training import distributed as distributed
from funcnn.training import epoch as epoch
from funcnn.training import interrupt as interrupt
from funcnn.training import lm as lm
from funcnn.training import loop as loop
from funcnn.training import precision as precision
from funcnn.training import runs as runs
from funcnn.training import step as step
from funcnn.training.epoch import Placement as Placement
from funcnn.training.epoch import make_epoch as make_epoch
from funcnn.training.epoch import scan_is_slow as scan_is_slow
from funcnn.training.epoch import shuffle as shuffle
from funcnn.training.fit import FitResult as FitResult
from funcnn.training.fit import accuracy as accuracy
from funcnn.training.fit import evaluate as evaluate
from funcnn.training.fit import fit as fit
from funcnn.training.fit import predictor as predictor
from funcnn.training.interrupt import Interrupted as Interrupted
from funcnn.training.lm import LMResult as LMResult
from funcnn.training.lm import train_lm as train_lm
from funcnn.training.loop import NonFiniteError as NonFiniteError
from funcnn.training.loop import Plan as Plan
from funcnn.training.loop import open_checkpoints as open_checkpoints
from funcnn.training.loop import train_loop as train_loop
from funcnn.training.step import guard_names as guard_names
from funcnn.training.step import make_step as make_step

__all__ = ["FitResult", "Interrupted", "LMResult", "NonFiniteError", "Placement", "Plan", "accuracy", "checkpoint",
           "distributed", "epoch", "evaluate", "fit", "guard_names", "interrupt", "lm", "loop", "make_epoch",
           "make_step", "open_checkpoints", "precision", "predictor", "runs", "scan_is_slow", "shuffle", "step",
           "train_lm", "train_loop"]
