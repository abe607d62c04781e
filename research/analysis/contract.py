"""The positional-encoding contract, as functions anyone can call on a scheme, wherever it lives (in the spirit of
scikit-learn's `check_estimator`).

    check_scheme("my_pkg.gauss:GaussConfig@init_sigma=4")   every contract; one AssertionError listing each failure
                                                            by contract and scheme
    check_contract(subject(spec), "causal")                 one contract
    contract_tests("my_pkg.gauss:GaussConfig")              a pytest test function, parametrized by contract:
                                                            `test_gauss = contract_tests("...")` is a test file
    python scripts/check_scheme.py my_pkg.gauss:GaussConfig one line per contract, non-zero exit on a failure

A scheme is a registered name, an import path `pkg.module:Config[@key=value,...]`, a spec dict, or a config
instance. The contracts (CONTRACTS, in order) are those the project's own suite runs on every registered scheme
(tests/test_positional_contract.py calls this module): the hooks in a miniature attention forward (embed ->
project to q/k with grouped-query shapes -> rotate -> logits / sqrt(D) + bias), then the scheme in a small
transformer. Builds and compiled functions are shared by the contracts of one `Subject`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.config import ModelConfig, parse_spec, resolve_spec
from research.model import attention
from research.model.build import resolve_model
from research.model.transformer import Transformer
from research.positional import POSITIONAL, POSITIONS, Dims
from research.positional.base import PositionalConfig
from research.positional.positions import check_compatible, random_sorted_subset

DIMS = Dims(d_model=32, num_heads=4, head_dim=8, num_layers=2, max_len=16)
KV_HEADS = 2  # grouped-query shapes: K = 2 kv heads for H = 4


class ContractFailure(AssertionError):
    """A contract a scheme does not meet; the message names the contract and the scheme."""


def expect(condition, message: str) -> None:
    """An assertion that `python -O` keeps."""
    if not condition:
        raise AssertionError(message)


@dataclasses.dataclass
class Subject:
    """A scheme under test: its config, how it was named, the hook dims, and the builds its contracts share."""

    label: str
    config: PositionalConfig
    dims: Dims = DIMS
    cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def shared(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


def subject(scheme, *, dims: Dims | None = None) -> Subject:
    """A Subject from a name, an import path with options, a spec dict or a config instance."""
    if isinstance(scheme, PositionalConfig):
        return Subject(type(scheme).__name__, scheme, dims or DIMS)
    spec = parse_spec(scheme)
    label = scheme if isinstance(scheme, str) else spec["name"]
    return Subject(label, resolve_spec(POSITIONAL, spec, field="positional"), dims or DIMS)


# ---------------------------------------------------------------------------------------- the hooks alone


def _forward(s: Subject):
    """(jitted forward(state, ...), state, trace list): the hooks as attention uses them, in miniature."""

    def make():
        d = s.dims
        s.config.validate(d)
        graphdef, state = nnx.split(s.config.build(d, rngs=nnx.Rngs(0)))
        traces = []

        @jax.jit
        def forward(state, xq, xk, wq, wk, q_pos, k_pos):
            traces.append(1)  # runs only while tracing
            module = nnx.merge(graphdef, state)
            hq, hk = module.embed(xq, q_pos), module.embed(xk, k_pos)  # [B,T,E], [B,S,E]
            q = (hq @ wq.astype(hq.dtype)).reshape(*hq.shape[:2], d.num_heads, d.head_dim)  # [B,T,H,D]
            k = (hk @ wk.astype(hk.dtype)).reshape(*hk.shape[:2], KV_HEADS, d.head_dim)  # [B,S,K,D]
            q, k = module.rotate(q, k, q_pos, k_pos, layer=1)
            bias = module.bias(q_pos, k_pos, layer=1, q=q, k=k)
            k_heads = jnp.repeat(k, d.num_heads // KV_HEADS, axis=2).astype(jnp.float32)  # [B,S,H,D]
            logits = jnp.einsum("bthd,bshd->bhts", q.astype(jnp.float32), k_heads) / math.sqrt(d.head_dim)
            if bias is not None:
                logits = logits + bias  # [B,H,T,S]
            return hq, q, k, bias, logits

        return forward, state, traces

    return s.shared("forward", make)


def _inputs(s: Subject, t: int, length: int, dtype, seed: int = 0):
    """Two rows whose positions start at 0 and 3; the queries are the last t of `length` keys (as when decoding)."""
    d = s.dims
    rng = np.random.default_rng(seed)
    xk = jnp.asarray(rng.normal(size=(2, length, d.d_model)), dtype)
    wq = jnp.asarray(
        rng.normal(size=(d.d_model, d.num_heads * d.head_dim)) / math.sqrt(d.d_model), jnp.float32
    )
    wk = jnp.asarray(rng.normal(size=(d.d_model, KV_HEADS * d.head_dim)) / math.sqrt(d.d_model), jnp.float32)
    k_pos = jnp.arange(length, dtype=jnp.int32)[None] + jnp.array([[0], [3]], jnp.int32)
    return xk[:, -t:], xk, wq, wk, k_pos[:, -t:], k_pos


def shapes_and_dtypes(s: Subject) -> None:
    """Every hook's output shape and dtype, at the training length, at 4x it, in bfloat16, and with fewer queries
    than keys (t < s), under grouped-query shapes; the bias is float32 and finite, the logits finite."""
    forward, state, _ = _forward(s)
    d, n = s.dims, s.dims.max_len
    cases = ((n, n, jnp.float32), (4 * n, 4 * n, jnp.float32), (n, n, jnp.bfloat16), (n // 4, n, jnp.float32))
    for t, length, dtype in cases:
        hq, q, k, bias, logits = forward(state, *_inputs(s, t, length, dtype))
        where = f"t={t}, s={length}, {jnp.dtype(dtype).name}"
        expect(hq.shape == (2, t, d.d_model) and hq.dtype == dtype, f"embed: {hq.shape} {hq.dtype} ({where})")
        expect(
            q.shape == (2, t, d.num_heads, d.head_dim) and q.dtype == dtype, f"rotate q: {q.shape} ({where})"
        )
        expect(
            k.shape == (2, length, KV_HEADS, d.head_dim) and k.dtype == dtype,
            f"rotate k: {k.shape} ({where})",
        )
        if bias is not None:
            expect(
                bias.ndim == 4 and bias.shape[0] in (1, 2) and bias.shape[1:] == (d.num_heads, t, length),
                (f"bias: expected [B|1,{d.num_heads},{t},{length}], got {list(bias.shape)} ({where})"),
            )
            expect(bias.dtype == jnp.float32, f"bias: expected float32, got {bias.dtype} ({where})")
            expect(bool(jnp.isfinite(bias).all()), f"bias: not finite ({where})")
        expect(bool(jnp.isfinite(logits).all()), f"logits: not finite ({where})")


def bfloat16_tracks_float32(s: Subject) -> None:
    """bfloat16 inputs give logits within 0.15 of float32's (angles and positions in float32)."""
    forward, state, _ = _forward(s)
    n = s.dims.max_len
    *_, logits32 = forward(state, *_inputs(s, n, n, jnp.float32))
    *_, logits16 = forward(state, *_inputs(s, n, n, jnp.bfloat16))
    np.testing.assert_allclose(logits16, logits32, atol=0.15)


def jit_without_retracing(s: Subject) -> None:
    """New positions (and values) of the same shapes do not retrace the jitted hooks."""
    forward, state, traces = _forward(s)
    n = s.dims.max_len
    xq, xk, wq, wk, q_pos, k_pos = _inputs(s, n, n, jnp.float32)
    forward(state, xq, xk, wq, wk, q_pos, k_pos)
    traced = len(traces)
    forward(state, xq, xk, wq, wk, q_pos + 7, k_pos + 7)
    forward(state, xq * 2, xk * 2, wq, wk, q_pos + 1, k_pos + 1)
    expect(len(traces) == traced, "new values of the same shapes must not retrace")


def shift_behaviour(s: Subject) -> None:
    """relative = True: the logits do not move when every position shifts by 7; relative = False: they do."""
    forward, state, _ = _forward(s)
    n = s.dims.max_len
    xq, xk, wq, wk, q_pos, k_pos = _inputs(s, n, n, jnp.float32)
    *_, before = forward(state, xq, xk, wq, wk, q_pos, k_pos)
    *_, after = forward(state, xq, xk, wq, wk, q_pos + 7, k_pos + 7)
    if s.config.relative:
        np.testing.assert_allclose(
            after, before, atol=1e-5, err_msg="relative = True, but shifting positions moved the logits"
        )
    else:
        expect(
            not np.allclose(after, before, atol=1e-3),
            "absolute scheme (relative = False) ignored its positions",
        )


def shared_bias_is_true_to_the_hook(s: Subject) -> None:
    """A scheme that sets `shared_bias` (one bias for every layer, computed once) returns the same bias for every
    layer and for any q and k; a scheme that does not set it passes."""
    d = s.dims
    module = s.config.build(d, rngs=nnx.Rngs(0))
    if not module.shared_bias:
        return
    _, xk, wq, wk, _, k_pos = _inputs(s, d.max_len, d.max_len, jnp.float32)
    q = (xk @ wq).reshape(2, d.max_len, d.num_heads, d.head_dim)
    k = (xk @ wk).reshape(2, d.max_len, KV_HEADS, d.head_dim)
    first = module.bias(k_pos, k_pos, layer=0, q=q, k=k)
    expect(first is not None, "shared_bias = True, but bias returned None")
    for layer in range(d.num_layers):
        for qq, kk in ((None, None), (q * 2.0, k - 1.0)):
            np.testing.assert_array_equal(
                module.bias(k_pos, k_pos, layer=layer, q=qq, k=kk), first,
                err_msg=f"shared_bias = True, but the bias of layer {layer} differs (or depends on q, k)",
            )  # fmt: skip


# ------------------------------------------------------------------------------------ in a small transformer


def model(
    s: Subject, *, d_model: int, num_layers: int, num_heads: int, max_len: int, vocab: int, seed: int = 0
):
    """A Transformer with the subject's scheme (built from its config instance, so an unregistered one works)."""
    config = ModelConfig(
        d_model=d_model, num_layers=num_layers, num_heads=num_heads, positional={"name": "nope"}
    )
    resolved = resolve_model(config, max_len=max_len, vocab_size=vocab)
    resolved = dataclasses.replace(resolved, positional=s.config)
    s.config.validate(resolved.dims)
    return Transformer(resolved, vocab_size=vocab, rngs=nnx.Rngs(seed))


SMALL = dict(d_model=16, num_layers=2, num_heads=2, max_len=8, vocab=32)


def _small(s: Subject):
    """The small model with every non-positional parameter copied from the same model with NoPE, so that the
    positional encoding is the only difference; and NoPE's tokens, positions and logits."""

    def make():
        base = model(subject("nope"), **SMALL)
        tokens = jnp.asarray(
            np.random.default_rng(0).integers(0, SMALL["vocab"], (2, SMALL["max_len"])), jnp.int32
        )
        pos = jnp.broadcast_to(jnp.arange(SMALL["max_len"], dtype=jnp.int32), (2, SMALL["max_len"]))
        m = model(s, **SMALL)
        for part in ("embedding", "blocks", "final_norm"):
            nnx.update(getattr(m, part), nnx.state(getattr(base, part)))
        return m, tokens, pos, np.asarray(base(tokens, pos))

    return s.shared("small", make)


def changes_the_model(s: Subject) -> None:
    """With everything else equal, the scheme changes the logits of a NoPE model at initialisation (a scheme whose
    parameters start at zero must initialise them to small nonzero values, as t5_bias does)."""
    m, tokens, pos, reference = _small(s)
    logits = np.asarray(m(tokens, pos))
    expect(np.isfinite(logits).all(), "logits not finite")
    if s.label != "nope":
        expect(
            np.abs(logits - reference).max() > 1e-6,
            f"{s.label} gives the same logits as nope: its hooks do nothing",
        )


def shared_positions_broadcast(s: Subject) -> None:
    """Positions [1,T] (what contiguous samplers return) give the same logits as the same positions per row [B,T]."""
    m, tokens, pos, _ = _small(s)
    np.testing.assert_allclose(np.asarray(m(tokens, pos[:1])), np.asarray(m(tokens, pos)), rtol=1e-5, atol=1e-6,
                               err_msg="positions [1,T] and [B,T] give different logits")  # fmt: skip


CAUSAL = dict(d_model=32, num_layers=2, num_heads=4, max_len=12, vocab=50)


def _causal_model(s: Subject):
    return s.shared("causal", lambda: model(s, **CAUSAL))


def causal(s: Subject) -> None:
    """Logits [B,T,V] float32 and finite; changing token t+1 leaves every output at positions <= t unchanged and
    changes a later one."""
    m, t_len, vocab = _causal_model(s), CAUSAL["max_len"], CAUSAL["vocab"]
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, vocab, (2, t_len)), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(t_len, dtype=jnp.int32), (2, t_len))
    logits = m(tokens, pos)
    expect(
        logits.shape == (2, t_len, vocab) and logits.dtype == jnp.float32,
        f"logits {logits.shape} {logits.dtype}",
    )
    expect(bool(jnp.all(jnp.isfinite(logits))), "logits not finite")
    t = 5
    changed = tokens.at[:, t + 1].set((tokens[:, t + 1] + 1) % vocab)
    other = m(changed, pos)
    np.testing.assert_array_equal(np.asarray(logits[:, : t + 1]), np.asarray(other[:, : t + 1]),
                                  err_msg="a later token changed an earlier output: not causal")  # fmt: skip
    expect(
        not np.allclose(np.asarray(logits[:, t + 1 :]), np.asarray(other[:, t + 1 :])),
        "the changed token is ignored",
    )


def beyond_the_training_length(s: Subject) -> None:
    """The model evaluates at 4x the training length without error, with finite logits."""
    t_len = 4 * CAUSAL["max_len"]
    pos = jnp.broadcast_to(jnp.arange(t_len, dtype=jnp.int32), (1, t_len))
    expect(
        bool(jnp.all(jnp.isfinite(_causal_model(s)(jnp.zeros((1, t_len), jnp.int32), pos)))),
        "not finite at 4x",
    )


def blocks_equal_one_block(s: Subject) -> None:
    """Attention in query blocks (the causally masked blocks skipped, the bias hook called per block) gives the
    logits and gradients of the one-block form, with positions per row (sorted, gaps, an offset per row) and shared
    ones. One layer holds the property (two for a per-layer scheme, to route layers to its members)."""
    t = attention.MIN_QUERY_BLOCK * attention.MAX_QUERY_BLOCKS
    layers = 2 if getattr(s.config, "pattern", None) is not None else 1
    m = model(s, d_model=32, num_layers=layers, num_heads=4, max_len=2 * t, vocab=50)
    graphdef, params = nnx.split(m)
    # Sharpened attention, so that a wrong key range shows: with x4, a block that sees one key past its end moves
    # the gradients by 0.3-0.4 of their scale, while float32 stays ~1e-6 from a float64 run.
    params = jax.tree.map(lambda x: x * 4.0, params)
    gaps = random_sorted_subset(jax.random.key(1), 2, t, 2 * t)  # [2,T], sorted positions in [0, 2T)
    shared = jnp.arange(t, dtype=jnp.int32)[None]
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 50, (2, t)), jnp.int32)

    def loss(p, pos):
        return jnp.mean(nnx.merge(graphdef, p)(tokens, pos) ** 2)

    for pos in (gaps, shared):
        split = jax.jit(jax.value_and_grad(loss))(params, pos)
        blocks, attention.MAX_QUERY_BLOCKS = attention.MAX_QUERY_BLOCKS, 1
        try:
            whole = jax.jit(jax.value_and_grad(loss))(params, pos)
        finally:
            attention.MAX_QUERY_BLOCKS = blocks
        np.testing.assert_allclose(split[0], whole[0], rtol=1e-5, err_msg="query blocks change the loss")
        # float32 summation order differs: tolerance relative to each leaf, with a floor at float32 rounding of the
        # model's gradient scale for leaves whose exact gradient is 0
        floor = 1e-7 * max(float(np.abs(b).max()) for b in jax.tree.leaves(whole[1]))
        for a, b in zip(jax.tree.leaves(split[1]), jax.tree.leaves(whole[1]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()) + floor,
                                       err_msg="query blocks change the gradients")  # fmt: skip


SAMPLER_OPTIONS = {
    "interpolated": {"train_len": 4},
    "randomized": {"max_len": 64},
    "shifted": {"max_offset": 16},
}


def every_sampler_composes(s: Subject) -> None:
    """Training and evaluation positions of every registered sampler give finite logits; a pair that
    `check_compatible` rejects really fails on fractional positions (interpolated is told a training length of
    T/2, so that its evaluation positions are fractional)."""
    m, tokens, _, _ = _small(s)
    n = SMALL["max_len"]
    for name in POSITIONS.names():
        sampler = resolve_spec(
            POSITIONS, {"name": name, **SAMPLER_OPTIONS.get(name, {})}, field="model.positions"
        )
        sampler.validate(n)
        try:
            check_compatible(
                s.config, sampler, Dims(d_model=16, num_heads=2, head_dim=8, num_layers=2, max_len=n)
            )
        except ValueError:
            pos = sampler.sample(2, n, key=jax.random.key(0), train=False)
            expect(pos.dtype == jnp.float32, f"{name}: refused, but its positions are {pos.dtype}")
            expect(
                _fails(m, tokens, pos),
                f"check_compatible refuses positions={name}, but the scheme takes them",
            )
            continue
        for train in (True, False):
            logits = m(tokens, sampler.sample(2, n, key=jax.random.key(1), train=train))
            expect(logits.shape == (2, n, SMALL["vocab"]), f"{name}: logits {logits.shape}")
            expect(bool(jnp.isfinite(logits).all()), f"positions={name} (train={train}): logits not finite")


def _fails(m, tokens, pos) -> bool:
    try:
        m(tokens, pos)
    except Exception:  # noqa: BLE001  (whatever the scheme raises on fractional positions)
        return True
    return False


CONTRACTS = {
    "shapes and dtypes": shapes_and_dtypes,
    "bfloat16 tracks float32": bfloat16_tracks_float32,
    "jit without retracing": jit_without_retracing,
    "shift behaviour": shift_behaviour,
    "shared_bias true to the hook": shared_bias_is_true_to_the_hook,
    "causal": causal,
    "beyond the training length": beyond_the_training_length,
    "changes the model relative to nope": changes_the_model,
    "[1,T] positions equal [B,T]": shared_positions_broadcast,
    "blocks equal one block": blocks_equal_one_block,
    "every position sampler composes": every_sampler_composes,
}
"""Every contract, by name, in the order they run."""


def check_contract(s: Subject, name: str) -> None:
    """Run one contract; ContractFailure naming it and the scheme on failure (or on any error it raises)."""
    try:
        CONTRACTS[name](s)
    except Exception as e:  # noqa: BLE001  (a scheme that crashes a contract fails it)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ContractFailure(f"{s.label}: contract '{name}' failed: {reason}") from e


def results(scheme, *, dims: Dims | None = None) -> list[tuple[str, str | None]]:
    """[(contract, None if met else the reason)] for every contract, in order."""
    s = scheme if isinstance(scheme, Subject) else subject(scheme, dims=dims)
    out = []
    for name in CONTRACTS:
        try:
            check_contract(s, name)
            out.append((name, None))
        except ContractFailure as e:
            out.append((name, str(e).split(": ", 2)[-1]))
    return out


def check_scheme(scheme, *, dims: Dims | None = None) -> None:
    """Run every contract on a scheme; one ContractFailure listing each failed contract (by name, with the scheme
    and the reason) when any fails."""
    s = subject(scheme, dims=dims)
    failed = [(name, reason) for name, reason in results(s) if reason is not None]
    if failed:
        raise ContractFailure(
            f"{s.label} fails {len(failed)} of {len(CONTRACTS)} contracts:\n"
            + "\n".join(f"- {s.label}: contract '{name}' failed: {reason}" for name, reason in failed)
        )


def contract_tests(*schemes, dims: Dims | None = None):
    """A pytest test function, parametrized by scheme and contract: in a test file,
    `test_my_scheme = contract_tests("my_pkg.mod:Config")`."""
    import pytest

    subjects = {s: subject(s, dims=dims) for s in schemes}

    @pytest.mark.parametrize("contract", list(CONTRACTS))
    @pytest.mark.parametrize("scheme", list(subjects))
    def test(scheme, contract):
        check_contract(subjects[scheme], contract)

    return test
