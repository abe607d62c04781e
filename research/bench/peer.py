"""The PyTorch peer of the training-step benchmark: the reference config built with x-transformers
(lucidrains/x-transformers) and trained with torch.optim.AdamW on the same batch shape, timed the same way.

Matched to our model: decoder-only, pre-norm RMSNorm, 4 heads, GELU MLP of width 4 d, rotary embeddings on every
layer (`rotary_pos_emb=True`), tied input/output embedding, no biases in attention. Optional dependency:
`pip install -e .[peers]` (torch 2.13 CPU, x-transformers). Benchmark only, never imported by the framework.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from research.runtime import hostmem


def available() -> bool:
    try:
        import torch  # noqa: F401
        import x_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def bench_peer(*, ref: dict, steps: int = 10, warmup: int = 2) -> dict:
    import torch
    from x_transformers import Decoder, TransformerWrapper

    torch.manual_seed(0)
    model = TransformerWrapper(
        num_tokens=ref["vocab_size"],
        max_seq_len=ref["seq_len"],
        tie_embedding=True,
        use_abs_pos_emb=False,
        attn_layers=Decoder(
            dim=ref["d_model"],
            depth=ref["num_layers"],
            heads=ref["num_heads"],
            rotary_pos_emb=True,
            use_rmsnorm=True,
            ff_mult=4,
        ),
    )
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    shape = (ref["batch_size"], ref["seq_len"])
    inputs = torch.randint(0, ref["vocab_size"], shape)
    targets = torch.randint(0, ref["vocab_size"], shape)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    tokens = shape[0] * shape[1]
    return {
        "name": "peer/x-transformers",
        "scheme": "rope (x-transformers, PyTorch)",
        "step_ms": step_s * 1e3,
        "step_ms_spread": [min(times) * 1e3, max(times) * 1e3],
        "tokens_per_s": tokens / step_s,
        "params_total": params,
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "x_transformers": _version("x-transformers")},
    }


def bench_peer_process(*, ref: dict, steps: int = 10, warmup: int = 2) -> dict:
    """`bench_peer` in a new Python process with the C library's default malloc, as PyTorch runs outside this
    framework: the huge pages our training scripts use (research.runtime.hostmem) make the peer slower, although they
    cut its page faults as they cut ours (docs/performance_log.md)."""
    arguments = json.dumps({"ref": ref, "steps": steps, "warmup": warmup})
    done = subprocess.run(
        [sys.executable, "-m", "research.bench.peer", arguments],
        env=hostmem.without_huge_pages(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the peer's process failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "huge_pages": False}


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":  # one peer measurement; used by bench_peer_process
    print(json.dumps(bench_peer(**json.loads(sys.argv[1]))))
