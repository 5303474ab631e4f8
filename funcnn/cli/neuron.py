"""``funcnn neuron simulate|phase|fi``: Morris–Lecar and Hodgkin–Huxley on the command line."""
from __future__ import annotations

import argparse
import math
import os
import time

from funcnn.cli.args import UsageError, check_out_dir, finite_float, positive_float
from funcnn.cli.neuron_output import fi_figure, phase_figure, trace_figure, write_csv
from funcnn.science.neurons import (
    cycle_state,
    fi_curve,
    hodgkin_huxley,
    morris_lecar,
    nullclines,
    onset_current,
    rate_from_spikes,
    simulate,
    spike_times,
    stability,
)

MODELS = ("ml", "hh")
PRESETS = ("hopf", "snlc", "homoclinic")
# shortest --t-max (ms) that can hold a spike (simulate) / a steady-state rate (fi)
MIN_T_SIM = {"ml": 200.0, "hh": 20.0}
MIN_T_FI = {"ml": 1000.0, "hh": 200.0}
# the f-I run when --t-max/--dt are not given: the one experiments/excitability.py uses, so the
# onset the command prints is the one the README quotes from that script's table
FI_RUN = {"ml": dict(t_max=2000.0, dt=0.5), "hh": dict(t_max=1000.0, dt=0.025)}
# one simulation: at most this many RK4 steps (t-max/dt); simulate keeps ~t-max/0.1 ms samples
MAX_STEPS = 10_000_000
MAX_CURRENTS = 10_000


def current_range(text: str) -> tuple[float, float, int]:
    """An argparse type: ``"a:b:n"`` -> ``(a, b, n)`` with finite ``a < b`` and ``2 <= n <= MAX_CURRENTS``."""
    parts = text.split(":")
    try:
        a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3 or not (math.isfinite(a) and math.isfinite(b)) or not a < b or not 2 <= n <= MAX_CURRENTS:
            raise ValueError
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"expected start:stop:count with finite start < stop and 2 <= count <= {MAX_CURRENTS}, "
            f"got {text!r}") from None
    return a, b, n


def param_assignment(text: str) -> tuple[str, float]:
    """An argparse type: ``"gK=8"`` -> ``("gK", 8.0)`` (a finite number)."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip() or not math.isfinite(float(value)):
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER (finite) like gK=8, got {text!r}") from None


def _common(p: argparse.ArgumentParser, t_max_default: float | None, phase: bool = False) -> None:
    p.add_argument("--model", choices=("ml",) if phase else MODELS, default="ml",
                   help="ml (Morris–Lecar) or hh (Hodgkin–Huxley)")
    p.add_argument("--preset", choices=PRESETS, default="hopf", help="Morris–Lecar parameter set")
    p.add_argument("--param", type=param_assignment, action="append", default=[],
                   metavar="NAME=VALUE", help="override a model parameter (repeatable)")
    p.add_argument("--t-max", type=positive_float, default=t_max_default, help="duration, ms")
    p.add_argument("--dt", type=positive_float, default=None, help="RK4 step, ms")
    p.add_argument("--out", default=None, help="output folder (default runs/neuron-<time>)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``neuron`` parser and its ``simulate``, ``phase`` and ``fi`` subcommands."""
    parser = subparsers.add_parser("neuron", help="simulate and analyse neuron models")
    sub = parser.add_subparsers(dest="neuron_command", required=True,
                                parser_class=type(parser))
    p = sub.add_parser("simulate", help="voltage trace (plot and CSV)")
    _common(p, None)
    p.add_argument("--current", type=finite_float, required=True, help="applied current, µA/cm²")
    p.set_defaults(func=run_simulate)
    p = sub.add_parser("phase", help="Morris–Lecar phase plane")
    _common(p, 1000.0, phase=True)
    p.add_argument("--current", type=finite_float, required=True, help="applied current, µA/cm²")
    p.set_defaults(func=run_phase)
    p = sub.add_parser("fi", help="f–I curve (plot and CSV) and onset current(s)")
    _common(p, None)
    p.add_argument("--currents", type=current_range, required=True, metavar="A:B:N",
                   help="N currents from A to B, µA/cm²")
    p.set_defaults(func=run_fi)


def _model(args):
    over = dict(args.param)
    try:
        params = morris_lecar(args.preset, **over) if args.model == "ml" else hodgkin_huxley(**over)
    except ValueError as e:
        raise UsageError(f"--param: {e}") from None
    dt = params.default_dt if args.dt is None else args.dt
    return params, dt


def _check_t(args, dt, minimum, default):
    t_max = default if args.t_max is None else args.t_max
    if t_max / dt > MAX_STEPS:
        raise UsageError(f"--t-max/--dt: at most {MAX_STEPS:,} RK4 steps per simulation (memory and time), "
                         f"got {t_max:g} ms / {dt:g} ms = {t_max / dt:.3g} steps")
    if t_max < minimum:
        raise UsageError(f"--t-max: must be >= {minimum:g} ms for model {args.model} "
                         f"(too short to see a spike), got {t_max:g}")
    if dt > t_max / 100:
        raise UsageError(f"--dt: must be <= t-max/100 = {t_max / 100:g} ms, got {dt:g}")
    if dt > 1.0 or (args.model == "hh" and dt > 0.05):
        raise UsageError(f"--dt: RK4 is not accurate for this model above "
                         f"{1.0 if args.model == 'ml' else 0.05:g} ms, got {dt:g}")
    return t_max


def _outdir(args):
    """Checked after every other argument, created before any work (a new or empty folder)."""
    out = check_out_dir(os.path.join("runs", "neuron-" + time.strftime("%Y%m%d-%H%M%S"))
                        if args.out is None else args.out)
    out.mkdir(parents=True, exist_ok=True)
    return str(out)


def run_simulate(args: argparse.Namespace) -> int:
    """Simulate at one current; write ``trace.csv`` and ``trace.png``; print the spikes and rate."""
    import numpy as np

    params, dt = _model(args)
    t_max = _check_t(args, dt, MIN_T_SIM[args.model], 500.0 if args.model == "ml" else 100.0)
    out = _outdir(args)
    save = max(1, int(round(0.1 / dt)))
    tr = simulate(params, args.current, t_max, dt=dt, save_every=save)
    names = ("t",) + params.state_names
    cols = [np.asarray(tr[k]) for k in names]
    write_csv(os.path.join(out, "trace.csv"), names, zip(*cols))
    spikes = spike_times(tr["t"], tr["V"], params.threshold, params.refractory)
    trace_figure(os.path.join(out, "trace.png"), cols[0], cols[1],
                 f"{params.name} {args.preset if args.model == 'ml' else ''} I={args.current:g}")
    print(f"spikes {len(spikes)}  steady rate {rate_from_spikes(spikes, t_max / 2):.2f} Hz")
    print(f"wrote {out}/trace.csv and {out}/trace.png")
    return 0


def run_phase(args: argparse.Namespace) -> int:
    """The Morris–Lecar phase plane at one current: equilibria printed, ``phase.png`` and ``nullclines.csv``."""
    import jax.numpy as jnp
    import numpy as np

    params, dt = _model(args)
    t_max = _check_t(args, dt, MIN_T_SIM["ml"], 1000.0)
    out = _outdir(args)
    V = jnp.linspace(-80.0, 60.0, 701)
    nc = nullclines(params, args.current, V)
    eq = stability(params, args.current)
    y0 = eq[0][0].at[0].add(20.0) if eq else None  # a suprathreshold kick from rest
    tr = simulate(params, args.current, t_max, dt=dt, y0=y0)
    for y, ev, st in eq:
        print(f"equilibrium V={float(y[0]):.3f} N={float(y[1]):.4f} {st} "
              f"eigenvalues {np.round(np.asarray(ev), 5).tolist()}")
    phase_figure(os.path.join(out, "phase.png"), V, nc, tr, eq, f"Morris–Lecar {args.preset} I={args.current:g}")
    write_csv(os.path.join(out, "nullclines.csv"), ("V", "N_dV0", "N_dN0"),
               zip(*[np.asarray(nc[k]) for k in ("V", "N_dV0", "N_dN0")]))
    print(f"wrote {out}/phase.png and {out}/nullclines.csv")
    return 0


def _onset(params, currents, rates, start, t_max, dt):
    import numpy as np

    firing = np.flatnonzero(rates > 0)
    if len(firing) == 0 or firing[0] == 0:
        return None
    i = firing[0]
    return onset_current(params, currents[i - 1], currents[i], start=start, t_max=t_max, dt=dt,
                         tol=1e-4)


def run_fi(args: argparse.Namespace) -> int:
    """The f–I curve from rest and on the cycle; the onset currents printed; ``fi.csv`` and ``fi.png``."""
    import jax.numpy as jnp
    import numpy as np

    params, dt = _model(args)
    if args.dt is None:
        dt = FI_RUN[args.model]["dt"]
    t_max = _check_t(args, dt, MIN_T_FI[args.model], FI_RUN[args.model]["t_max"])
    a, b, n = args.currents
    out = _outdir(args)
    currents = np.linspace(a, b, n)
    rest = np.asarray(fi_curve(params, jnp.asarray(currents), t_max, dt=dt, start="rest"))
    y_cyc = cycle_state(params, float(b), t_max, dt)
    cyc = np.asarray(fi_curve(params, jnp.asarray(currents), t_max, dt=dt, start=y_cyc))
    write_csv(os.path.join(out, "fi.csv"), ("current", "rate_from_rest_hz", "rate_on_cycle_hz"),
               zip(currents, rest, cyc))
    on_rest = _onset(params, currents, rest, "rest", t_max, dt)
    on_cyc = _onset(params, currents, cyc, "cycle", t_max, dt) if cyc[-1] > 0 else None
    fmt = lambda x: "none" if x is None else f"{x:.3f}"
    print(f"onset from_rest={fmt(on_rest)} lowest_on_cycle={fmt(on_cyc)} uA/cm2 "
          f"(range {a:g}..{b:g}, {n} currents)")
    fi_figure(os.path.join(out, "fi.png"), currents, rest, cyc,
              f"{params.name} {args.preset if args.model == 'ml' else ''} f–I")
    print(f"wrote {out}/fi.csv and {out}/fi.png")
    return 0
