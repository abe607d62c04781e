"""Where rope's training step goes: its parts jitted and timed alone, a jax.profiler trace attributed to XLA's
compiled ops, and XLA's own cost analysis of the layers."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research.bench.measure import median_time
from research.bench.reference import REFERENCE, Reference, reference
from research.config import TrainConfig


def _layers_grad(r: Reference):
    """Jitted params -> gradient of <features(inputs), fixed cotangent>: the layers' forward and backward (embedding
    lookup, positional encoding, every block, final norm) without the readout and loss."""
    b, t = r.inputs.shape
    pos = r.resolved.positions.sample(b, t, key=jax.random.key(0), train=True)
    cotangent = jnp.asarray(
        np.random.default_rng(1).normal(size=(b, t, r.resolved.config.d_model)), jnp.float32
    )
    features = lambda p: nnx.merge(r.graphdef, p).features(r.inputs, pos)  # noqa: E731
    return jax.jit(jax.grad(lambda p: jnp.vdot(features(p), cotangent)))


def step_breakdown(positional: str = "rope", *, repeats: int = 5, ref: dict = REFERENCE) -> dict:
    """Where a training step's time goes: medians (ms) of separately jitted parts at the reference config.

    - `layers`: embedding lookup + positional + every block, forward and backward (to a fixed cotangent);
    - `readout_loss`: readout matmul + softmax cross-entropy, forward and backward, as the default train.loss_chunk
      computes them (fused and chunked, research/training/loss.py);
    - `readout_loss_plain`: the same on the full [B,T,V] logits (train.loss_chunk = 0);
    - `optimizer`: the AdamW update and its application to every parameter;
    - `step`: the whole jitted training step. `step` minus the sum of the parts is what fusion across the parts
      saves (negative) or what the glue costs (positive)."""
    from research.training.loss import fused_mean_nll, mean_nll

    r = reference(positional, ref)
    params = r.params
    hidden = jnp.asarray(np.random.default_rng(2).normal(size=(*r.inputs.shape, ref["d_model"])), jnp.float32)
    layers = _layers_grad(r)

    def readout(fused: bool):
        def loss(p, h):
            embedding = nnx.merge(r.graphdef, p).embedding
            if fused:
                return fused_mean_nll(embedding, h, r.targets, chunk=TrainConfig().loss_chunk)
            return mean_nll(embedding.unembed(h), r.targets)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    @jax.jit
    def optimizer(p, state, g):
        updates, state = r.tx.update(g, state, p)
        return optax.apply_updates(p, updates), state

    plain, fused = readout(False), readout(True)
    grads = jax.tree.map(jnp.ones_like, params)
    state = [jax.tree.map(jnp.copy, params), r.tx.init(params)]  # the step donates its own copies

    def step():
        state[0], state[1], metrics = r.step_fn(state[0], state[1], r.inputs, r.targets, jnp.int32(0))
        return metrics["loss"]

    parts = {
        "layers": lambda: layers(params),
        "readout_loss": lambda: fused(params, hidden),
        "readout_loss_plain": lambda: plain(params, hidden),
        "optimizer": lambda: optimizer(params, r.opt_state, grads),
        "step": step,
    }
    out = {}
    for name, fn in parts.items():
        jax.block_until_ready(fn())  # compile and warm up
        out[name] = median_time(fn, repeats) * 1e3
    return out


_CONTROL_FLOW = ("while", "call", "conditional")
"""HLO ops whose traced intervals contain their bodies' ops: left out of the per-op times (no double counting)."""


def profile_ops(
    positional: str = "rope",
    *,
    steps: int = 3,
    top: int = 20,
    ref: dict = REFERENCE,
    scan_layers: bool = False,
) -> dict:
    """Trace `steps` training steps with jax.profiler and attribute the time to XLA's compiled ops.

    -> {"step_ms", "traced_ms", "ops": the `top` ops by ms per step, each with its HLO name, output shape and the
    jax operation it came from (its metadata op_name), "by_source": ms per step summed by that jax operation and
    output shape}. Durations are the executor's per-op intervals: ops the CPU runtime runs concurrently (some
    matmuls) overlap, so `traced_ms` need not equal `step_ms`."""
    import collections
    import gzip
    import json
    import re
    import tempfile

    r = reference(positional, ref, scan_layers=scan_layers)
    compiled = r.compile()
    one = r.runner(compiled)
    for i in range(2):
        jax.block_until_ready(one(i))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for i in range(steps):
                jax.block_until_ready(one(i))
        step_ms = (time.perf_counter() - start) / steps * 1e3  # includes the tracer's own overhead
        (trace,) = Path(folder).rglob("*.trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    instructions = {}  # HLO name -> (output shape, jax op)
    for line in compiled.as_text().splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([\w\-]+)\(", line)
        if m and m.group(3) not in _CONTROL_FLOW:
            source = re.search(r'op_name="([^"]+)"', line)
            instructions[m.group(1)] = (m.group(2), source.group(1) if source else "")
    total = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in instructions:
            total[e["name"]] += e["dur"] / 1e3 / steps  # microseconds -> ms per step
    ops = [
        {"op": name, "ms": ms, "shape": instructions[name][0], "source": instructions[name][1]}
        for name, ms in total.most_common()
    ]
    by_source = collections.Counter()
    for o in ops:
        by_source[f"{o['source'].rsplit('/', 1)[-1] or '?'} -> {o['shape'].split('{')[0]}"] += o["ms"]
    return {
        "step_ms": step_ms,
        "traced_ms": sum(total.values()),
        "ops": ops[:top],
        "by_source": dict(by_source.most_common(top)),
    }


def layers_cost(positional: str = "rope", *, ref: dict = REFERENCE) -> dict:
    """XLA's own cost analysis of the layers' forward and backward (the `layers` part of `step_breakdown`):
    {"flops", "bytes"} = floating-point operations and bytes read + written by the compiled program. With the
    measured matmul rate and copy bandwidth they bound the time from below (compute-bound vs bandwidth-bound)."""
    r = reference(positional, ref)
    cost = _layers_grad(r).lower(r.params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # older jax returned one dict per device
    return {"flops": float(cost["flops"]), "bytes": float(cost["bytes accessed"])}
