"""What a positional scheme does before training, read off its hooks (no scheme-specific code).

For any registered scheme, built at its initialisation:
- embed  -> position vectors P[t] = embed(0, t); cosine similarity between positions (heatmap);
- rotate -> the q·k envelope: q = k = all-ones vectors rotated at positions i and j, q_i·k_j / sqrt(D) against
            the distance i - j (RoPE's long-term decay, xPos's extra decay);
- bias   -> the additive logit bias of the last query against distance, one line per head (random q and k for
            content-dependent schemes).
A hook that leaves its input unchanged (the NoPE default) is reported as "identity" and not plotted.

For a trained run (`attention_distances`, `plot_attention_distance`): the mean attention distance per head and
layer, sum_j a_ij (i - j) averaged over queries i and test windows (the measure of Dosovitskiy et al. 2021, in
tokens), at the training length and beyond it, read from the attention weights each layer sows
(nnx.Intermediate "weights").
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.analysis.trained import load_run, split_windows
from research.config import resolve_spec
from research.positional import POSITIONAL, Dims
from research.studies import plotting


def probe(name_or_spec, *, dims: Dims, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Hook outputs of a freshly built scheme; keys 'similarity' [T,T], 'envelope' [T], 'bias' [H,T]."""
    config = resolve_spec(POSITIONAL, name_or_spec, field="positional")
    pe = config.build(dims, rngs=nnx.Rngs(seed))
    pos = jnp.arange(length, dtype=jnp.int32)[None]  # [1,T]
    out: dict[str, np.ndarray] = {}

    zeros = jnp.zeros((1, length, dims.d_model), jnp.float32)
    vectors = np.asarray(pe.embed(zeros, pos))[0]  # [T,E]
    if np.any(vectors != 0):
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)
        out["similarity"] = unit @ unit.T

    ones = jnp.ones((1, length, dims.num_heads, dims.head_dim), jnp.float32)
    q, k = pe.rotate(ones, ones, pos, pos, layer=0)
    if not (
        np.array_equal(np.asarray(q), np.asarray(ones)) and np.array_equal(np.asarray(k), np.asarray(ones))
    ):
        scores = jnp.einsum("thd,shd->hts", q[0], k[0]) / np.sqrt(dims.head_dim)  # [H,T,S]
        envelope = np.asarray(scores[0, -1, ::-1])  # last query; index = distance 0..T-1
        if np.ptp(envelope) > 1e-6 * np.abs(envelope).max():  # flat (xl_relative's q + u): nothing to show
            out["envelope"] = envelope

    key_q, key_k = jax.random.split(jax.random.key(seed))
    rq = jax.random.normal(key_q, ones.shape)
    rk = jax.random.normal(key_k, ones.shape)
    rq, rk = pe.rotate(rq, rk, pos, pos, layer=0)  # the bias hook sees q and k after rotate, as in attention
    bias = pe.bias(pos, pos, layer=0, q=rq, k=rk)
    if bias is not None:
        out["bias"] = np.asarray(jnp.broadcast_to(bias, (1, dims.num_heads, length, length))[0, :, -1, ::-1])
    return out


def plot_scheme(name: str, folder: Path, *, dims: Dims, length: int) -> Path:
    panels = probe(name, dims=dims, length=length)
    n = max(1, len(panels))
    fig, axes = plotting.figure(1, n, width=4.6, height=3.8)
    axes = axes[0]
    if not panels:
        axes[0].text(
            0.5,
            0.5,
            "all hooks are the identity\n(order only through the causal mask)",
            ha="center",
            va="center",
        )
        axes[0].set_axis_off()
    i = 0
    if "similarity" in panels:
        im = axes[i].imshow(panels["similarity"], cmap="RdBu_r", vmin=-1, vmax=1)
        axes[i].set_title("cosine similarity of position vectors")
        axes[i].set_xlabel("position")
        axes[i].set_ylabel("position")
        fig.colorbar(im, ax=axes[i], fraction=0.046)
        i += 1
    if "envelope" in panels:
        axes[i].plot(panels["envelope"])
        axes[i].set_title("q·k/√D of all-ones q, k vs distance")
        axes[i].set_xlabel("distance i - j")
        i += 1
    if "bias" in panels:
        for h, row in enumerate(panels["bias"]):
            axes[i].plot(row, label=f"head {h}", color=plotting._PALETTE[h % len(plotting._PALETTE)])
        axes[i].set_title("attention bias of the last query vs distance")
        axes[i].set_xlabel("distance i - j")
        axes[i].legend(fontsize=6, ncol=2)
    plotting.subtitle(
        fig, name, f"at initialisation; d_model {dims.d_model}, {dims.num_heads} heads, T={length}"
    )
    path = plotting.save_figure(fig, Path(folder) / f"{name}.png", dpi=100)
    return path


def mean_attention_distance(weights) -> np.ndarray:
    """[B,H,T,S] causal attention weights (queries = the last T of S keys) -> [H] mean of sum_j a_ij (i - j)."""
    w = np.asarray(weights, dtype=np.float64)
    t, s = w.shape[-2:]
    distance = np.maximum(np.arange(t)[:, None] + (s - t) - np.arange(s)[None, :], 0)  # [T,S]
    return (w * distance).sum(-1).mean(axis=(0, 2))  # [H]


def attention_distances(model, resolved, tokens: np.ndarray) -> np.ndarray:
    """Mean attention distance [layers, H] of `model` on token windows [B,T] (evaluation positions)."""
    b, t = tokens.shape
    pos = resolved.positions.sample(b, t, key=jax.random.key(0), train=False)
    _, sown = nnx.capture(model, nnx.Intermediate)(jnp.asarray(tokens), pos)
    per_layer = [
        sown["blocks"][i]["attn"]["weights"].get_value()[0] for i in range(len(model.blocks))
    ]  # [B,H,T,S]
    return np.stack([mean_attention_distance(w) for w in per_layer])


def plot_attention_distance(
    run_dir: str | Path, *, multipliers=(1, 4), windows: int = 8, out: Path | None = None
) -> tuple[Path, dict]:
    """Figure (and values) of the mean attention distance per head, per layer, at multiples of the training length."""
    run = load_run(run_dir)
    config, train_len = run.config, run.resolved.dims.max_len
    values = {}
    for mult in multipliers:
        tokens = split_windows(run, mult * train_len, windows)
        values[tokens.shape[1]] = attention_distances(run.model, run.resolved, tokens)  # [L,H]
    layers = next(iter(values.values())).shape[0]
    fig, axes = plotting.figure(1, layers, width=3.6, height=3.4, sharey=True)
    for layer, ax in enumerate(axes[0]):
        for length, d in values.items():
            ax.plot(np.arange(d.shape[1]), d[layer], marker="o", label=f"T={length}")
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("head")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean attention distance (tokens)")
    plotting.legend(fig)
    plotting.subtitle(
        fig, f"{Path(run_dir).name}: {config.model.positional.get('name')}", "trained, test windows"
    )
    path = plotting.save_figure(
        fig, Path(out or Path(run_dir) / "figures") / "attention_distance.png", dpi=100
    )
    return path, values
