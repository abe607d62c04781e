"""The data path at scale: preparing a generated corpus of up to a gigabyte into token files, and reading training
batches from them.

    throughput   MB of text per second through the whole prepare step (stream, split, tokenise, write), for the byte
                 and BPE tokenizers with the default worker processes and with one, and a BPE tokenizer.json of the
                 same vocabulary size through our pipeline and through the Hugging Face batch encoder (the peer),
                 in interleaved rounds on a slice of the corpus
    memory       peak resident memory of the prepare step (the process and its workers together), for 0.25, 0.5 and
                 1 GB of text, and of a short training run on the prepared gigabyte
    batches      the time to draw one training batch from the memory-mapped gigabyte, against the reference step

The corpus is generated in the cache (never committed): paragraphs of the embedded wiki-sample corpus drawn at random,
in files of PART_MB. Each measurement runs in its own process with its own token cache, so none reads another's.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from research.runtime.cache import cache_dir

PART_MB = 32
BPE = {"name": "bpe", "vocab_size": 4096, "max_train_lines": 100_000}
"""The benchmark's BPE: SentencePiece trained on 100k lines (the training's memory and time are bounded by
max_train_lines, not by the corpus)."""


def generate_corpus(megabytes: int, *, seed: int = 0) -> Path:
    """A folder of `megabytes` MB of text in PART_MB files of paragraphs (blank-line separated) drawn from the
    wiki-sample corpus; written once into the cache."""
    folder = cache_dir() / "bench" / "corpus"
    parts = [folder / f"part-{i:03d}.txt" for i in range(-(-megabytes // PART_MB))]
    missing = [p for p in parts if not p.exists()]
    if missing:
        from research.data.corpora import resolve_corpus

        wiki = resolve_corpus("wiki-sample").load()
        paragraphs = [
            p for s in ("train", "valid", "test") for d in wiki.documents(s) for p in d.split("\n\n")
        ]
        paragraphs = [p.strip("\n") + "\n" for p in paragraphs if p.strip()]
        folder.mkdir(parents=True, exist_ok=True)
        for part in missing:
            rng = np.random.default_rng([seed, int(part.stem.split("-")[1])])
            write_part(part, paragraphs, rng)
    return folder


def write_part(path: Path, paragraphs: list[str], rng) -> None:
    size, pieces = 0, []
    while size < PART_MB << 20:
        for i in rng.integers(0, len(paragraphs), 1000):
            pieces.append(paragraphs[i])
            size += len(paragraphs[i].encode())
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(pieces))
    os.replace(tmp, path)


def subset(folder: Path, megabytes: int) -> Path:
    """A folder of links to the first parts holding `megabytes` MB."""
    view = folder.parent / f"first-{megabytes}MB"
    view.mkdir(exist_ok=True)
    for i in range(-(-megabytes // PART_MB)):
        link = view / f"part-{i:03d}.txt"
        if not link.exists():
            link.symlink_to(folder / link.name)
    return view


def text_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


class PeakRSS:
    """Samples the resident memory of a process and all its descendants together (from /proc), every 50 ms."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, tree_rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and its descendants."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                parents[int(entry)], rss[int(entry)] = (
                    int(fields[1]),
                    int(fields[21]) * os.sysconf("SC_PAGE_SIZE"),
                )
            except (OSError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in tree]
        tree.update(children)
        frontier = children
    return sum(rss.get(p, 0) for p in tree)


def run_measured(code: str | list[str]) -> tuple[dict, int]:
    """Run Python `code` (or an argv) in a fresh process -> (the JSON of its last output line, or {"seconds": wall
    time} for an argv; the peak RSS in bytes of the process and its children)."""
    argv = [sys.executable, "-c", code] if isinstance(code, str) else code
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    sampler = PeakRSS(process.pid)
    out, _ = process.communicate()
    peak, seconds = sampler.stop(), time.perf_counter() - start
    if process.returncode:
        raise RuntimeError(f"benchmark process failed ({process.returncode}): {' '.join(argv)[:300]}")
    return (json.loads(out.strip().splitlines()[-1]) if isinstance(code, str) else {"seconds": seconds}), peak


PREPARE = """
import json, shutil, time
from research.config import DataConfig
from research.data.pipeline import prepare_data, resolve_data, token_folder
data = DataConfig(corpus={corpus!r}, tokenizer={tokenizer!r})
shutil.rmtree(token_folder(data, *resolve_data(data)), ignore_errors=True)
start = time.perf_counter()
ds = prepare_data(data, workers={workers})
print(json.dumps({{"seconds": time.perf_counter() - start, "tokens": sum(len(s.tokens) for s in ds.splits.values())}}))
"""

HF_PEER = """
import json, time
from tokenizers import Tokenizer
from research.data.corpora import resolve_corpus
tok, corpus, batch, tokens = Tokenizer.from_file({path!r}), resolve_corpus({corpus!r}), [], 0
start = time.perf_counter()
for doc in corpus.stream():
    batch.append(doc)
    if len(batch) == 4096:
        tokens += sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False))
        batch = []
tokens += sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False))
print(json.dumps({{"seconds": time.perf_counter() - start, "tokens": tokens}}))
"""


def corpus_spec(folder: Path) -> dict:
    """The benchmark's corpus: paragraphs, 0.05% each to valid and test (so that evaluating a run stays short)."""
    return {"name": "files", "path": str(folder), "valid_fraction": 5e-4, "test_fraction": 5e-4}


def prepare(folder: Path, tokenizer, workers: int) -> dict:
    """One timed prepare of `folder` from scratch, in its own process: seconds, MB/s, tokens, peak RSS."""
    code = PREPARE.format(corpus=corpus_spec(folder), tokenizer=tokenizer, workers=workers)
    out, peak = run_measured(code)
    return {**out, "mb_per_s": text_megabytes(folder) / out["seconds"], "peak_rss_mb": peak / 2**20}


def hf_peer(folder: Path, path: Path) -> dict:
    """The Hugging Face batch encoder over the same documents (read by the same stream, nothing written)."""
    out, peak = run_measured(HF_PEER.format(path=str(path), corpus=corpus_spec(folder)))
    return {**out, "mb_per_s": text_megabytes(folder) / out["seconds"], "peak_rss_mb": peak / 2**20}


def hf_bpe(folder: Path, vocab_size: int) -> Path:
    """A byte-level BPE tokenizer.json of `vocab_size` trained by `tokenizers` on the first part (the peer)."""
    path = cache_dir() / "bench" / f"hf-bpe-{vocab_size}" / "tokenizer.json"
    if not path.exists():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tok.train([str(sorted(folder.iterdir())[0])], trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        tok.save(str(path))
    return path


def throughput(folder: Path, *, rounds: int, workers: int, log) -> list[dict]:
    """Every preparer on `folder`, in `rounds` interleaved rounds (median MB/s per preparer; the first BPE prepare,
    which trains SentencePiece, is untimed)."""
    hf = hf_bpe(folder, BPE["vocab_size"])
    prepare(folder, BPE, workers)  # trains and caches the SentencePiece model
    cases = {
        f"prepare/byte/{workers}_workers": lambda: prepare(folder, "byte", workers),
        "prepare/byte/1_process": lambda: prepare(folder, "byte", 1),
        f"prepare/bpe/{workers}_workers": lambda: prepare(folder, BPE, workers),
        "prepare/bpe/1_process": lambda: prepare(folder, BPE, 1),
        f"prepare/hf_bpe/{workers}_workers": lambda: prepare(
            folder, {"name": "hf", "path": str(hf)}, workers
        ),
        "hf_tokenizers/encode_batch": lambda: hf_peer(folder, hf),
    }
    seen = {name: [] for name in cases}
    for i in range(rounds):
        for name, case in cases.items():
            seen[name].append(case())
            log(f"data round {i + 1}: {name} {seen[name][-1]['mb_per_s']:.1f} MB/s")
    return [
        {
            "name": name,
            "mb_per_s": statistics.median(r["mb_per_s"] for r in runs),
            "mb_per_s_spread": [min(r["mb_per_s"] for r in runs), max(r["mb_per_s"] for r in runs)],
            "tokens": runs[0]["tokens"],
            "text_mb": text_megabytes(folder),
        }  # fmt: skip
        for name, runs in seen.items()
    ]


def memory(corpus: Path, sizes_mb: list[int], *, workers: int, log) -> list[dict]:
    """Peak RSS of preparing the first `size` MB of the corpus, for each size and tokenizer."""
    rows = []
    for tokenizer, label in (("byte", "byte"), (BPE, "bpe")):
        for size in sizes_mb:
            result = prepare(subset(corpus, size), tokenizer, workers)
            rows.append({"name": f"prepare_memory/{label}/{size}MB", "text_mb": size, **result})
            log(
                f"prepare {label} {size} MB: {result['mb_per_s']:.1f} MB/s, peak RSS {result['peak_rss_mb']:.0f} MB"
            )
    return rows


def train_config(folder: Path, ref: dict, steps: int) -> dict:
    """A reference-sized byte-level run on the prepared corpus: `steps` steps, evaluated at the training length."""
    from research.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig, to_dict

    config = Config(
        data=DataConfig(
            corpus=corpus_spec(folder),
            tokenizer={"name": "byte"},
            seq_len=ref["seq_len"],
            batch_size=ref["batch_size"],
            max_eval_bytes=1 << 18,
        ),  # fmt: skip
        model=ModelConfig(d_model=ref["d_model"], num_layers=ref["num_layers"], num_heads=ref["num_heads"]),
        train=TrainConfig(steps=steps, warmup_steps=1, log_every=steps, eval_every=0, checkpoint_every=steps),
        eval=EvalConfig(length_multipliers=(1,)),
    )
    return to_dict(config)


def training_memory(folder: Path, ref: dict, *, steps: int = 20) -> dict:
    """Peak RSS of scripts/train.py training `steps` steps on the prepared corpus (prepared again first if needed,
    then included in the peak), and its wall time."""
    scratch = cache_dir() / "bench" / "train-run"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    (scratch / "config.json").write_text(json.dumps(train_config(folder, ref, steps)))
    script = Path(__file__).resolve().parents[2] / "scripts" / "train.py"
    argv = [
        sys.executable,
        str(script),
        "--config",
        str(scratch / "config.json"),
        "--workdir",
        str(scratch / "run"),
    ]
    out, peak = run_measured(argv)
    return {"name": f"train_memory/byte/{text_megabytes(folder):.0f}MB", "steps": steps, "peak_rss_mb": peak / 2**20,
            **out}  # fmt: skip


def batch_time(folder: Path, ref: dict, *, draws: int = 200) -> dict:
    """Median seconds to draw one global training batch (seq_len x batch_size of the reference) from the memory-
    mapped byte-level train split of `folder`, over `draws` steps spread across the corpus."""
    from research.config import DataConfig
    from research.data.pipeline import prepare_data
    from research.data.stream import train_batch

    data = DataConfig(corpus=corpus_spec(folder), tokenizer={"name": "byte"})
    tokens = prepare_data(data).splits["train"].tokens
    times = []
    for step in np.linspace(0, 10**7, draws).astype(int):
        start = time.perf_counter()
        train_batch(tokens, seq_len=ref["seq_len"], batch_size=ref["batch_size"], seed=0, step=int(step))
        times.append(time.perf_counter() - start)
    return {"name": "batch/byte", "train_tokens": len(tokens), "batch_ms": 1e3 * statistics.median(times),
            "batch_ms_spread": [1e3 * min(times), 1e3 * max(times)]}  # fmt: skip
