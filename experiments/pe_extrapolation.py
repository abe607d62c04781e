"""Do positional encodings extrapolate past the training length in a byte-level causal LM?

Question: train small decoder-only LMs on the default corpus (gensim's Wikipedia sample, byte tokens) at sequence
length 64 with each positional scheme, then measure test bits-per-byte at 1x, 2x, 4x and 8x that length
(non-overlapping windows). Published claim (Press et al. 2022, arXiv 2108.12409): ALiBi and T5 bias stay flat past
the training length; sinusoidal and learned absolute encodings degrade; RoPE degrades too.

Schemes: the six of Press et al.'s comparison (SCHEMES) and every other registered scheme (EXTRA_SCHEMES;
`per_layer` is RoPE in two layers of three and none in the third, Llama 4's pattern scaled to 3 layers).

Commands:
  python scripts/sweep.py experiments/pe_extrapolation.py            # full study: 15 schemes x 3 seeds (~70 min)
  python scripts/report.py experiments/pe_extrapolation.py           # -> results/pe_extrapolation/
  python scripts/sweep.py experiments/pe_extrapolation.py:small      # 15 schemes x 1 seed (~25 min)
  python scripts/sweep.py experiments/pe_extrapolation.py:classic    # the six classic schemes x 3 seeds (~55 min)
  python scripts/sweep.py experiments/pe_extrapolation.py:demo       # make demo: 6 schemes x 1 seed, short
  python scripts/train.py experiments/pe_extrapolation.py:runlocal,positional=alibi --workdir /tmp/run  # seconds

Runtime on 2 CPU cores: see results/pe_extrapolation/table.md (the report states the measured wall time).
"""

from research.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig
from research.studies.experiment import parse_knobs

SCHEMES = ("nope", "learned", "sinusoidal", "rope", "alibi", "t5_bias")
EXTRA_SCHEMES = (
    "scaled_sinusoidal",
    "xpos",
    "kerple",
    "sandwich",
    "fire",
    "cope",
    "xl_relative",
    "dynamic_bias",
    "data_dependent_alibi",
    "per_layer",
)
SPECS = {"per_layer": {"name": "per_layer", "pattern": ["rope", "rope", "nope"]}}
SEQ_LEN = 64  # short, so that 18 runs fit in an hour on 2 CPU cores
MULTIPLIERS = (1, 2, 4, 8)


def knobs(arg):
    return parse_knobs(arg, demo=False, runlocal=False, small=False, classic=False, positional="rope", seed=0)


def get_config(arg: str = "") -> Config:
    k = knobs(arg)
    steps, eval_bytes, d_model, layers = 500, 60_000, 128, 3
    if k.demo:
        steps, eval_bytes = 120, 20_000
    if k.runlocal:
        steps, eval_bytes, d_model, layers = 4, 5_000, 32, 2
    return Config(
        seed=k.seed,
        data=DataConfig(
            corpus={"name": "wiki-sample"},
            tokenizer={"name": "byte"},
            seq_len=SEQ_LEN,
            batch_size=32 if not k.runlocal else 4,
            max_eval_bytes=eval_bytes,
        ),
        model=ModelConfig(
            d_model=d_model,
            num_layers=layers,
            num_heads=4,
            positional=SPECS.get(k.positional, {"name": k.positional}),
        ),
        train=TrainConfig(
            steps=steps,
            learning_rate=6e-3,  # best of {2e-3, 6e-3, 1.2e-2} for rope at 400 steps
            warmup_steps=max(1, steps // 10),
            log_every=max(1, min(50, steps // 4)),
            eval_every=max(1, steps // 3),
            checkpoint_every=max(1, steps // 3),
        ),
        eval=EvalConfig(length_multipliers=MULTIPLIERS, batch_size=16, valid_max_windows=64),
    )


def sweep(add, arg: str = "") -> None:
    k = knobs(arg)
    seeds = (0,) if (k.demo or k.runlocal or k.small) else (0, 1, 2)
    schemes = SCHEMES if (k.demo or k.classic) else SCHEMES + EXTRA_SCHEMES
    for positional in schemes:
        for seed in seeds:
            add(positional=positional, seed=seed)


def metrics() -> list[str]:
    return [f"test/len_{m * SEQ_LEN}/bpb" for m in MULTIPLIERS]
