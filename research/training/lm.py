"""The corpus language-model objective: next-token prediction on a text corpus, scored in bits per UTF-8 byte.

Training batches are chunks of the train split's token stream (research/data/stream.py: a pure function of
(seed, step), each process reading only its rows). Periodic validation scores the first `eval.valid_max_windows`
windows of the valid split at the training length. The final evaluation scores the whole test split (or the
documents data.max_eval_bytes samples) at every evaluation length, in non-overlapping or sliding windows
(`eval.stride`; research/training/evaluate.py), and keeps per-document totals and the loss by position in the
window for the summary; with `eval.frequency_buckets`, also the loss by train-split frequency of the target token
and of the input token before it, with per-document totals of each bucket.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from research.config import Config, ConfigError
from research.data.pipeline import prepare_data, validate_data_config
from research.data.stream import train_batch
from research.model.build import ResolvedModel, resolve_model
from research.training.evaluate import (
    evaluate_buckets,
    evaluate_split,
    frequency_buckets,
    make_bucket_eval_step,
    make_eval_step,
)
from research.training.objective import ModelInputs, ModelView


def eval_lengths(config: Config) -> list[int]:
    """Final test lengths: eval.lengths if given, else eval.length_multipliers times data.seq_len."""
    if config.eval.lengths is not None:
        return list(config.eval.lengths)
    return [m * config.data.seq_len for m in config.eval.length_multipliers]


def window_mode(stride: int | None) -> str:
    """How the final evaluation windows a split, in words (named in every table header)."""
    return "non-overlapping windows" if stride is None else f"sliding windows, stride {stride} tokens"


def input_pieces(tokenizer) -> list[str]:
    """The string of every input id: `input_pieces()` where the tokenizer spells unknown words, else `pieces()`."""
    return tokenizer.input_pieces() if hasattr(tokenizer, "input_pieces") else tokenizer.pieces()


class LanguageModel:
    """research/training/objective.py: Objective, for a corpus (`data.corpus`, `data.tokenizer`)."""

    throughput_key = "train/tokens_per_s"
    validation_keys = ("valid/loss", "valid/ppl", "valid/bpb")
    selection = ("valid/loss", "min")

    def __init__(self, config: Config):
        self.config = config

    def validate(self) -> ResolvedModel:
        validate_data_config(self.config.data)
        return resolve_model(self.config.model, max_len=self.config.data.seq_len)

    def sharded_sizes(self) -> dict[str, int]:
        return {
            "data.batch_size": self.config.data.batch_size,
            "eval.batch_size": self.config.eval.batch_size,
        }

    def prepare(self, log) -> ModelInputs:
        self.data = prepare_data(self.config.data)
        tokenizer = self.data.tokenizer
        resolved = resolve_model(
            self.config.model, max_len=self.config.data.seq_len, vocab_size=tokenizer.vocab_size
        )
        log(
            f"vocab {tokenizer.vocab_size} ({tokenizer.name}); "
            f"{len(self.data.splits['train'].tokens):,} train tokens"
        )
        return ModelInputs(
            resolved, tokenizer.vocab_size, input_pieces(tokenizer), getattr(tokenizer, "unk_id", 0)
        )

    def init_params(self, params, resolved: ResolvedModel, log) -> dict | None:
        """The table's rows from model.pretrained (in place); the coverage report."""
        p = self.config.model.pretrained
        if p.path is None:
            return None
        from research.vectors.init import pretrained_rows

        vocab_size = self.data.tokenizer.vocab_size
        counts = np.bincount(np.asarray(self.data.splits["train"].tokens), minlength=vocab_size)[:vocab_size]
        matrix, report = pretrained_rows(
            p, pieces=self.data.tokenizer.pieces(), counts=counts, init_std=resolved.embedding.init_std,
            seed=self.config.seed, log=log,
        )  # fmt: skip
        table = params["embedding"]["table"]
        if table.shape != matrix.shape:
            raise ConfigError(
                f"model.pretrained: aligned vectors {matrix.shape} do not fit the table {table.shape}"
            )
        table[...] = jnp.asarray(matrix)
        if p.mode != "finetune" and resolved.embedding.tied:
            log(
                f"note: model.pretrained.mode={p.mode} with a tied readout: the readout is the table, so it is "
                "frozen too"
            )
        return report

    def attach(self, view: ModelView) -> None:
        self.view = view
        self.eval_step = make_eval_step(view.graphdef, view.positions)
        self.final_step = (
            self.eval_step
            if view.eval_graphdef is view.graphdef
            else make_eval_step(view.eval_graphdef, view.positions)
        )

    def batch(self, step: int, process_index: int, process_count: int) -> tuple:
        c, train = self.config.data, self.data.splits["train"]
        return train_batch(
            train.tokens, seq_len=c.seq_len, batch_size=c.batch_size, seed=self.config.seed, step=step,
            process_index=process_index, process_count=process_count, close=train.close,
        )  # fmt: skip

    def throughput(self, steps: int, seconds: float) -> dict:
        tokens = steps * self.config.data.batch_size * self.config.data.seq_len
        return {self.throughput_key: tokens / max(seconds, 1e-9)}

    def validation(self, params) -> dict:
        out = self._score(
            self.eval_step, params, "valid", self.config.data.seq_len,
            max_windows=self.config.eval.valid_max_windows or None,
        )  # fmt: skip
        return {f"valid/{k}": out[k] for k in ("loss", "ppl", "bpb")}

    def evaluate(self, params, log) -> dict:
        test, stride = self.data.splits["test"], self.config.eval.stride
        log(
            f"test split: {test.num_documents} documents, {test.num_bytes:,} bytes, {len(test.tokens):,} tokens; "
            f"{window_mode(stride)}"
        )
        final, self.details = {}, {"per_document": {}, "by_position": {}}
        for length in eval_lengths(self.config):
            out = self._score(self.final_step, params, "test", length, stride=min(stride or length, length))
            name = f"test/len_{length}"
            self.details["per_document"][name] = out.pop("per_document")
            self.details["by_position"][name] = out.pop("by_position")
            final.update({f"{name}/{k}": v for k, v in out.items()})
            log(f"test length {length}: loss {out['loss']:.4f} bpb {out['bpb']:.4f} ppl {out['ppl']:.3f}")
        if self.config.eval.frequency_buckets:
            final.update(self._by_frequency(params, log))
        return final

    def _score(self, step_fn, params, split: str, length: int, *, stride=None, max_windows=None) -> dict:
        return evaluate_split(
            step_fn, params, self.data.splits[split], length=length, batch_size=self.config.eval.batch_size,
            mesh=self.view.mesh, stride=stride, max_windows=max_windows,
        )  # fmt: skip

    def _by_frequency(self, params, log) -> dict:
        """Test loss at the training length by train-split frequency of the target token and of the input token."""
        tokenizer, seq_len = self.data.tokenizer, self.config.data.seq_len
        names, bucket_of = frequency_buckets(
            self.data.splits["train"].tokens, tokenizer.vocab_size, self.config.eval.frequency_buckets,
            getattr(tokenizer, "unk_id", None), num_ids=len(input_pieces(tokenizer)),
        )  # fmt: skip
        step_fn = make_bucket_eval_step(self.view.eval_graphdef, self.view.positions, bucket_of, len(names))
        out = evaluate_buckets(
            step_fn, params, self.data.splits["test"], names, length=seq_len,
            batch_size=self.config.eval.batch_size, mesh=self.view.mesh,
        )  # fmt: skip
        self.details["per_document_buckets"] = {f"test/len_{seq_len}": out.pop("per_document")}
        for kind in ("bucket", "after"):
            log(
                f"test loss by train frequency of the {'target' if kind == 'bucket' else 'input'} token: "
                + ", ".join(
                    f"{k.split('/', 1)[1]} {v:.3f}" for k, v in out.items() if k.startswith(f"loss_{kind}")
                )
            )
        return {f"test/len_{seq_len}/{k}": v for k, v in out.items()}

    def summary(self) -> dict:
        splits, test = self.data.splits, self.data.splits["test"]
        evaluation = {
            "split": "test", "documents": test.num_documents, "bytes": int(test.num_bytes),
            "stride": self.config.eval.stride, "mode": window_mode(self.config.eval.stride),
        }  # fmt: skip
        return {
            "evaluation": evaluation,
            **self.details,
            "tokens": {name: int(len(s.tokens)) for name, s in splits.items()},
            "bytes": {name: int(s.num_bytes) for name, s in splits.items()},
            "oov_rate": {name: s.oov_rate for name, s in splits.items()},
            "tokenizer": self.data.tokenizer.name,
            "vocab_size": self.data.tokenizer.vocab_size,
        }
