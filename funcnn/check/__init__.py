"""Gradient checking: hand-written backward vs autodiff vs finite differences."""
from funcnn.check.core import TOL_AUTODIFF, TOL_FD, check_backward, check_layer, check_loss
from funcnn.check.report import Report, Row

__all__ = ["Report", "Row", "TOL_AUTODIFF", "TOL_FD", "check_backward", "check_layer", "check_loss"]
