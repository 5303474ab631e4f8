"""The layer protocol and what every layer builds on; imports nothing above it.

`Layer` and `serial` (`layer`), the combinators (`residual`, `parallel`, `fan_out`,
`fan_in_sum`, `fan_in_concat`), `with_manual_vjp`, initialisers, dtype and sharding
helpers, argument validation and the autotuner.
"""
from funcnn.core.combinators import fan_in_concat as fan_in_concat
from funcnn.core.combinators import fan_in_sum as fan_in_sum
from funcnn.core.combinators import fan_out as fan_out
from funcnn.core.combinators import parallel as parallel
from funcnn.core.combinators import residual as residual
from funcnn.core.layer import Layer as Layer
from funcnn.core.layer import serial as serial
from funcnn.core.manual_vjp import with_manual_vjp as with_manual_vjp

__all__ = ["Layer", "fan_in_concat", "fan_in_sum", "fan_out", "parallel", "residual", "serial", "with_manual_vjp"]
