"""Gradient checking: hand-written backward vs autodiff vs finite differences."""
from funcnn.check.core import (TOL_AUTODIFF, TOL_FD, check_backward, check_layer, check_loss, primal_only,
                               random_params)
from funcnn.check.custom import check_custom_jvp, check_custom_vjp
from funcnn.check.diagnose import diagnose, explain
from funcnn.check.model import ModelReport, ModelRow, check_model
from funcnn.check.report import Report, Row
from funcnn.check import debug as debug

__all__ = ["ModelReport", "ModelRow", "Report", "Row", "TOL_AUTODIFF", "TOL_FD", "check_backward",
           "check_custom_jvp", "check_custom_vjp", "check_layer", "check_loss", "check_model", "diagnose",
           "explain", "primal_only", "random_params"]
