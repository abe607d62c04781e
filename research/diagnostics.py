"""What a positional scheme does before training, read off its hooks (no scheme-specific code).

For any registered scheme, built at its initialisation:
- embed  -> position vectors P[t] = embed(0, t); cosine similarity between positions (heatmap);
- rotate -> the q·k envelope: q = k = all-ones vectors rotated at positions i and j, q_i·k_j / sqrt(D) against
            the distance i - j (RoPE's long-term decay, xPos's extra decay);
- bias   -> the additive logit bias of the last query against distance, one line per head (random q and k for
            content-dependent schemes).
A hook that leaves its input unchanged (the NoPE default) is reported as "identity" and not plotted.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research.config import resolve_spec
from research.positional import POSITIONAL, Dims


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
        out["envelope"] = np.asarray(scores[0, -1, ::-1])  # last query; index = distance 0..T-1

    key_q, key_k = jax.random.split(jax.random.key(seed))
    rq = jax.random.normal(key_q, ones.shape)
    rk = jax.random.normal(key_k, ones.shape)
    bias = pe.bias(pos, pos, layer=0, q=rq, k=rk)
    if bias is not None:
        out["bias"] = np.asarray(jnp.broadcast_to(bias, (1, dims.num_heads, length, length))[0, :, -1, ::-1])
    return out


def plot_scheme(name: str, folder: Path, *, dims: Dims, length: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = probe(name, dims=dims, length=length)
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False)
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
            axes[i].plot(row, label=f"head {h}")
        axes[i].set_title("attention bias of the last query vs distance")
        axes[i].set_xlabel("distance i - j")
        axes[i].legend(fontsize=6, ncol=2)
    fig.suptitle(f"{name} (at initialisation; d_model {dims.d_model}, {dims.num_heads} heads, T={length})")
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
