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

from research.config import resolve_spec
from research.plotting import save_figure
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
    fig.suptitle(f"{name}\n(at initialisation; d_model {dims.d_model}, {dims.num_heads} heads, T={length})")
    path = save_figure(fig, Path(folder) / f"{name}.png", dpi=100)
    return path


def mean_attention_distance(weights) -> np.ndarray:
    """[B,H,T,S] causal attention weights (queries = the last T of S keys) -> [H] mean of sum_j a_ij (i - j)."""
    w = np.asarray(weights, dtype=np.float64)
    t, s = w.shape[-2:]
    distance = np.maximum(np.arange(t)[:, None] + (s - t) - np.arange(s)[None, :], 0)  # [T,S]
    return (w * distance).sum(-1).mean(axis=(0, 2))  # [H]


def load_trained_model(run_dir: str | Path):
    """(config, model with the run's final parameters, resolved model) of a finished run directory."""
    import json

    from research.checkpoint import Checkpointer
    from research.config import Config, from_dict
    from research.model.transformer import Transformer, resolve_model
    from research.train import make_optimizer

    run_dir = Path(run_dir)
    config = from_dict(Config, json.loads((run_dir / "config.json").read_text()))
    if config.task.task is not None:
        from research.train_task import validate as validate_task

        task, resolved = validate_task(config)
        vocab_size, pieces = task.vocab_size, None
    else:
        from research.data.pipeline import prepare_data

        tokenizer = prepare_data(config.data).tokenizer
        from research.train import input_pieces

        vocab_size, pieces = tokenizer.vocab_size, input_pieces(tokenizer)
        resolved = resolve_model(config.model, max_len=config.data.seq_len, vocab_size=vocab_size)
    if not resolved.embedding.needs_pieces:
        pieces = None
    model = Transformer(resolved, vocab_size=vocab_size, rngs=nnx.Rngs(config.seed), pieces=pieces)
    graphdef, params = nnx.split(model)
    tx = make_optimizer(config.train, config.model.pretrained)
    ckpt = Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(
                f"{run_dir / 'checkpoints'}: no checkpoint to read the trained parameters from"
            )
        params, _ = ckpt.restore(step, (params, tx.init(params)))
    finally:
        ckpt.close()
    return config, nnx.merge(graphdef, params), resolved


def attention_distances(model, resolved, tokens: np.ndarray) -> np.ndarray:
    """Mean attention distance [layers, H] of `model` on token windows [B,T] (evaluation positions)."""
    b, t = tokens.shape
    pos = resolved.positions.sample(b, t, key=jax.random.key(0), train=False)
    _, sown = nnx.capture(model, nnx.Intermediate)(jnp.asarray(tokens), pos)
    per_layer = [
        sown["blocks"][i]["attn"]["weights"].get_value()[0] for i in range(len(model.blocks))
    ]  # [B,H,T,S]
    return np.stack([mean_attention_distance(w) for w in per_layer])


def run_windows(run_dir: str | Path, config, length: int, count: int) -> np.ndarray:
    """Up to `count` test windows [B, length] of a run's data (test split; for task runs, the longest test input)."""
    if config.task.task is not None:
        from research.train_task import eval_batch, resolve_task, sequence_length

        task = resolve_task(config)
        n = max(m for m in range(1, config.task.eval_max_length + 1) if sequence_length(task, m) <= length)
        return eval_batch(task, n, examples=count, length=sequence_length(task, n))[0]
    from research.data.pipeline import prepare_data

    tokens = np.asarray(prepare_data(config.data).splits["test"].tokens)
    windows = min(count, len(tokens) // length)
    if windows == 0:
        raise ValueError(f"the test split has {len(tokens)} tokens, fewer than one window of {length}")
    return tokens[: windows * length].reshape(windows, length)


def plot_attention_distance(
    run_dir: str | Path, *, multipliers=(1, 4), windows: int = 8, out: Path | None = None
) -> tuple[Path, dict]:
    """Figure (and values) of the mean attention distance per head, per layer, at multiples of the training length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, model, resolved = load_trained_model(run_dir)
    train_len = resolved.dims.max_len
    values = {}
    for mult in multipliers:
        tokens = run_windows(run_dir, config, mult * train_len, windows)
        values[tokens.shape[1]] = attention_distances(model, resolved, tokens)  # [L,H]
    layers = next(iter(values.values())).shape[0]
    fig, axes = plt.subplots(1, layers, figsize=(3.6 * layers, 3.4), squeeze=False, sharey=True)
    for layer, ax in enumerate(axes[0]):
        for length, d in values.items():
            ax.plot(np.arange(d.shape[1]), d[layer], marker="o", label=f"T={length}")
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("head")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean attention distance (tokens)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{Path(run_dir).name}: {config.model.positional.get('name')} (trained, test windows)")
    path = save_figure(fig, Path(out or Path(run_dir) / "figures") / "attention_distance.png", dpi=100)
    return path, values
