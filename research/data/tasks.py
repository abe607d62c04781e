"""Synthetic length-generalisation tasks, generated on the fly, in decoder-only framing.

Each example is `input SEP output`: the model reads the whole sequence causally and is scored (loss and accuracy)
on the output tokens only. Tasks follow Delétang et al. 2023 ("Neural Networks and the Chomsky Hierarchy",
arXiv 2207.02098) and Ruoss et al. 2023 ("Randomized Positional Encodings Boost Length Generalization of
Transformers", arXiv 2305.16843). `length` is the input length n; train on n <= N, evaluate every n <= M.

Token ids: 0 = PAD (never scored), 1 = SEP, 2.. = the task's symbols. Batch arrays for a fixed n all share one
shape, so one length compiles once:
    inputs[B,S], targets[B,S] (= the sequence shifted by one), mask[B,S] (1.0 where the target is an output token)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from research.registry import Registry

TASKS: Registry[type] = Registry("task")
PAD, SEP, FIRST = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class TaskBatch:
    inputs: np.ndarray  # [B,S] int32
    targets: np.ndarray  # [B,S] int32
    mask: np.ndarray  # [B,S] float32, 1 on output targets


def frame(inputs: np.ndarray, outputs: np.ndarray, output_mask: np.ndarray | None = None) -> TaskBatch:
    """[B,n] input symbols and [B,m] output symbols (ids >= FIRST, PAD allowed in outputs) -> TaskBatch."""
    b = inputs.shape[0]
    seq = np.concatenate([inputs, np.full((b, 1), SEP), outputs], axis=1).astype(np.int32)  # [B,n+1+m]
    out_mask = np.ones_like(outputs, np.float32) if output_mask is None else output_mask.astype(np.float32)
    mask = np.concatenate(
        [np.zeros((b, inputs.shape[1]), np.float32), out_mask], axis=1
    )  # aligned to targets
    return TaskBatch(seq[:, :-1], seq[:, 1:], mask)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """Base: `symbols` input symbols; subclasses define `outputs` and may change `num_symbols`."""

    symbols: int = 2
    """Alphabet size of the input string."""

    @property
    def vocab_size(self) -> int:
        return FIRST + self.num_symbols

    @property
    def num_symbols(self) -> int:
        return self.symbols

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> TaskBatch:
        if length < 1:
            raise ValueError(f"{type(self).__name__}: expected length >= 1, got {length}")
        x = rng.integers(0, self.symbols, (batch, length))
        return self.make(rng, x)

    def make(self, rng: np.random.Generator, x: np.ndarray) -> TaskBatch:
        return frame(x + FIRST, self.outputs(x) + FIRST)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@TASKS.register("reverse_string")
@dataclasses.dataclass(frozen=True, kw_only=True)
class ReverseString(Task):
    def outputs(self, x):
        return x[:, ::-1]


@TASKS.register("duplicate_string")
@dataclasses.dataclass(frozen=True, kw_only=True)
class DuplicateString(Task):
    def outputs(self, x):
        return np.concatenate([x, x], axis=1)


@TASKS.register("bucket_sort")
@dataclasses.dataclass(frozen=True, kw_only=True)
class BucketSort(Task):
    symbols: int = 5

    def outputs(self, x):
        return np.sort(x, axis=1)


@TASKS.register("parity_check")
@dataclasses.dataclass(frozen=True, kw_only=True)
class ParityCheck(Task):
    def outputs(self, x):
        return (x.sum(axis=1, keepdims=True) % 2).astype(np.int64)


@TASKS.register("modular_arithmetic")
@dataclasses.dataclass(frozen=True, kw_only=True)
class ModularArithmetic(Task):
    """Expression d op d op ... d (n odd: n // 2 + 1 digits mod `modulus`, ops + - *), evaluated with the usual
    precedence (* before + and -), answered mod `modulus`. Even n are rounded down to odd."""

    modulus: int = 5

    @property
    def num_symbols(self) -> int:
        return self.modulus + 3  # digits, then + - *

    def sample(self, rng, batch, length):
        n_digits = max(1, (length + 1) // 2)
        digits = rng.integers(0, self.modulus, (batch, n_digits))
        ops = rng.integers(0, 3, (batch, n_digits - 1))
        x = np.empty((batch, 2 * n_digits - 1), np.int64)
        x[:, 0::2], x[:, 1::2] = digits, ops + self.modulus
        answers = np.array([self._evaluate(d, o) for d, o in zip(digits, ops)])[:, None]
        return frame(x + FIRST, answers + FIRST)

    def _evaluate(self, digits, ops) -> int:
        terms, signs, current = [], [1], int(digits[0])
        for op, d in zip(ops, digits[1:]):
            if op == 2:  # *
                current = current * int(d) % self.modulus
            else:
                terms.append(current)
                signs.append(1 if op == 0 else -1)
                current = int(d)
        terms.append(current)
        return sum(s * t for s, t in zip(signs, terms)) % self.modulus


@TASKS.register("binary_addition")
@dataclasses.dataclass(frozen=True, kw_only=True)
class BinaryAddition(Task):
    """a + b in binary, least-significant bit first (as Delétang et al.); input a, '+', b with len(a)+1+len(b) = n
    (n >= 3). Output: the sum's bits, LSB first, padded with PAD (unscored) to max(len)+1."""

    @property
    def num_symbols(self) -> int:
        return 3  # 0, 1, +

    def sample(self, rng, batch, length):
        length = max(3, length)
        la = rng.integers(1, length - 1)  # same split for the whole batch: one shape per length
        lb = length - 1 - la
        a = rng.integers(0, 2, (batch, la))
        b = rng.integers(0, 2, (batch, lb))
        m = max(la, lb) + 1
        out = np.zeros((batch, m), np.int64)
        mask = np.zeros((batch, m))
        for i in range(batch):
            value = _from_lsb(a[i]) + _from_lsb(b[i])
            bits = [int(c) for c in reversed(bin(value)[2:])] if value else [0]
            out[i, : len(bits)] = np.asarray(bits) + FIRST
            mask[i, : len(bits)] = 1
        x = np.concatenate([a, np.full((batch, 1), 2), b], axis=1)
        return frame(x + FIRST, out, mask)


def _from_lsb(bits) -> int:
    return int("".join(str(int(v)) for v in reversed(bits)), 2) if len(bits) else 0


@TASKS.register("missing_duplicate")
@dataclasses.dataclass(frozen=True, kw_only=True)
class MissingDuplicate(Task):
    """Input s s' where s' is s with one symbol replaced by a blank; output the missing symbol (Ruoss et al.).
    n is rounded down to even (n >= 2)."""

    @property
    def num_symbols(self) -> int:
        return self.symbols + 1  # the blank

    def sample(self, rng, batch, length):
        half = max(1, length // 2)
        s = rng.integers(0, self.symbols, (batch, half))
        where = rng.integers(0, half, batch)
        second = s.copy()
        second[np.arange(batch), where] = self.symbols  # blank
        answer = s[np.arange(batch), where][:, None]
        return frame(np.concatenate([s, second], axis=1) + FIRST, answer + FIRST)


@TASKS.register("associative_recall")
@dataclasses.dataclass(frozen=True, kw_only=True)
class AssociativeRecall(Task):
    """Pairs k1 v1 k2 v2 ... then a query key; output its value. Keys are distinct within an example.
    n = 2 * pairs + 1 (rounded); `symbols` keys and `symbols` values (disjoint id ranges)."""

    symbols: int = 16

    @property
    def num_symbols(self) -> int:
        return 2 * self.symbols

    def sample(self, rng, batch, length):
        pairs = max(1, min(self.symbols, (length - 1) // 2))
        keys = np.stack([rng.permutation(self.symbols)[:pairs] for _ in range(batch)])
        values = rng.integers(0, self.symbols, (batch, pairs)) + self.symbols
        which = rng.integers(0, pairs, batch)
        x = np.empty((batch, 2 * pairs + 1), np.int64)
        x[:, 0:-1:2], x[:, 1:-1:2], x[:, -1] = keys, values, keys[np.arange(batch), which]
        return frame(x + FIRST, values[np.arange(batch), which][:, None] + FIRST)


def accuracy(predictions: np.ndarray, batch: TaskBatch) -> dict[str, float]:
    """Per-token accuracy over output tokens and per-sequence accuracy (all output tokens right)."""
    correct = (predictions == batch.targets) * batch.mask
    per_seq = correct.sum(1) == batch.mask.sum(1)
    return {
        "token_accuracy": float(correct.sum() / batch.mask.sum()),
        "sequence_accuracy": float(per_seq.mean()),
    }
