r"""Recurrent layers over `(batch, time, features)` with backpropagation through time
written out: a reverse `lax.scan` per cell, the input projection and the weight gradients
hoisted out of the scans as single matrix products.

**Forward.** Every cell (`SimpleRNN`, `LSTM`, `GRU`; each module derives its own) computes,
at each step $t$, pre-activations that are a sum of an input projection and a recurrent
projection, with $B$ the batch, $F$ the features, $H$ the hidden size and $G$ the gate
width ($H$, $3H$ or $4H$):

$$
a_t = (x_t W_{ih}^\top + b_{ih}) \oplus (h_{t-1} W_{hh}^\top + b_{hh}) \qquad (B, G),
$$

combined gate by gate (a plain sum for SimpleRNN and LSTM; GRU multiplies the $n$-gate's
recurrent part by $r$). The input projection does not depend on the recurrence, so it is
one matrix product over all $T$ steps *before* the scan, on the time-major input:

$$
XP = X W_{ih}^\top + b_{ih} \qquad (T, B, G) \text{ from } X: (T, B, F).
$$

The scan then runs the cell over $t = 1, \dots, T$ from $h_0$ (zeros, or a given state),
stacking $h_t$ into $H_s$ `(T, B, H)` and each step's cache; the output is $H_s$ (batch
first, `(B, T, H)`) or $h_T$ `(B, H)`. The layer's cache holds $X$ `(T, B, F)`, $h_0$
`(B, H)`, $H_s$ `(T, B, H)` and the cell's stacked caches.

**Backward.** A cell's reverse scan carries $\partial L / \partial h_t$ (and
$\partial L / \partial c_t$ for the LSTM) from $t = T$ down to 1, adds the output's
gradient at each step, and returns for every step the gradients of the loss w.r.t. both
projections, $dA_x = \partial L / \partial XP$ and
$dA_h = \partial L / \partial (h_{t-1} W_{hh}^\top + b_{hh})$, each `(T, B, G)`. The weight
gradients are sums over time of outer products, again single matrix products contracting
time and batch together, *after* the scan (autodiff would accumulate $T$ small products
inside it), with $H_{prev} = [h_0, h_1, \dots, h_{T-1}]$ `(T, B, H)`:

$$
\frac{\partial L}{\partial W_{ih}} = \sum_t dA_{x,t}^\top x_t = dA_x^\top X \quad (G, F), \qquad
\frac{\partial L}{\partial W_{hh}} = \sum_t dA_{h,t}^\top h_{t-1} = dA_h^\top H_{prev} \quad (G, H),
$$

$$
\frac{\partial L}{\partial b_{ih}} = \sum_{t, n} dA_{x,t,n} \quad (G,), \qquad
\frac{\partial L}{\partial X} = dA_x\, W_{ih} \quad (T, B, F).
$$

**Initial state.** `x` is either the sequence batch alone (the state starts at zero) or a
pair `(x, state0)` with `state0 = h0` (SimpleRNN, GRU) or `(h0, c0)` (LSTM), each
`(batch, hidden)`. The backward's input gradient has the same structure: `dx` or
`(dx, dstate0)`, the carry's gradient when the reverse scan reaches $t = 0$.

The shell (`_shell`: `recurrent_forward`, `recurrent_backward`, `recurrent_layer`) does
the projections, the products and the wiring; the measured scan `unroll` is described
there.
"""
from funcnn.layers.recurrent.gru import GRU as GRU
from funcnn.layers.recurrent.lstm import LSTM as LSTM
from funcnn.layers.recurrent.rnn import SimpleRNN as SimpleRNN

__all__ = ["GRU", "LSTM", "SimpleRNN"]
