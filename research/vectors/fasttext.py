"""Facebook fastText's binary model (.bin): word rows and character n-gram buckets, so that any word, seen or not,
gets a vector composed from its n-grams exactly as fastText does (mean of the word's row and its n-gram rows; an
unseen word: mean of its n-gram rows; zero when it has none). Versions 11 and 12 with the magic number, and the
older layout without it; n-grams hashed with FNV-1a over UTF-8 bytes, each byte sign-extended, lengths counted in
characters."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np

from research.vectors.base import VectorFileError, Vectors, decode_word

FASTTEXT_MAGIC = 793712314
FASTTEXT_VERSION = 12
EOS = "</s>"


@dataclasses.dataclass
class Subwords:
    """fastText's character n-gram buckets: `rows` [nwords + bucket, dim] (word rows first), n-gram lengths
    minn..maxn in characters. `eos_ngrams`: whether `</s>` gets n-grams (old fastText files) or not (version >= 11)."""

    rows: np.ndarray
    nwords: int
    bucket: int
    minn: int
    maxn: int
    eos_ngrams: bool = False
    word_index: dict[str, int] = dataclasses.field(default_factory=dict)
    """Every dictionary word's row (also those past a `limit`)."""

    def row_ids(self, word: str, word_id: int | None) -> list[int]:
        ids = [] if word_id is None else [word_id]
        if self.bucket and self.maxn and (word != EOS or self.eos_ngrams):
            ids += [
                self.nwords + fasttext_hash(g) % self.bucket for g in char_ngrams(word, self.minn, self.maxn)
            ]
        return ids

    def compose(self, word: str) -> np.ndarray:
        """fastText's vector of any word: mean of its own row (if in the dictionary) and its n-gram rows."""
        ids = self.row_ids(word, self.word_index.get(word))
        if not ids:
            return np.zeros(self.rows.shape[1], np.float32)
        return self.rows[ids].mean(axis=0, dtype=np.float32)


def fasttext_hash(data: bytes) -> int:
    """fastText's 32-bit FNV-1a over bytes, each byte sign-extended (int8) before the xor."""
    h = 2166136261
    for b in data:
        h = ((h ^ (b | 0xFFFFFF00 if b >= 0x80 else b)) * 16777619) & 0xFFFFFFFF
    return h


def char_ngrams(word: str, minn: int, maxn: int) -> list[bytes]:
    """fastText's n-grams of `<word>`: minn..maxn characters (UTF-8 continuation bytes stay with their character),
    leaving out the lone boundary markers."""
    w = ("<" + word + ">").encode("utf-8")
    out = []
    for i in range(len(w)):
        if w[i] & 0xC0 == 0x80:
            continue
        j, n = i, 1
        while j < len(w) and n <= maxn:
            j += 1
            while j < len(w) and w[j] & 0xC0 == 0x80:
                j += 1
            if n >= minn and not (n == 1 and (i == 0 or j == len(w))):
                out.append(w[i:j])
            n += 1
    return out


def old_fasttext_header(data):
    if len(data) < 56:
        return None
    dim, ws, epoch, min_count, neg, word_ngrams, loss, model, bucket, minn, maxn, lr_update = (
        struct.unpack_from("<12i", data, 0)
    )
    plausible = (
        0 < dim <= 100_000 and 0 < ws <= 1000 and 0 < epoch <= 100_000 and loss in (1, 2, 3, 4)
        and model in (1, 2, 3) and bucket >= 0 and 0 <= minn <= maxn <= 100 and word_ngrams >= 1
    )  # fmt: skip
    return (dim, bucket, minn, maxn, model) if plausible else None


class _Cursor:
    def __init__(self, path: Path, data):
        self.path, self.data, self.pos = path, data, 0

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise VectorFileError(f"{self.path}: byte {self.pos}: file ends inside the fastText header")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def floats(self, rows: int, cols: int) -> np.ndarray:
        nbytes = 4 * rows * cols
        if self.pos + nbytes > len(self.data):
            raise VectorFileError(
                f"{self.path}: byte {self.pos}: a {rows} x {cols} matrix needs {nbytes} bytes, "
                f"{len(self.data) - self.pos} left (truncated file?)"
            )
        out = (
            np.frombuffer(self.data, dtype="<f4", count=rows * cols, offset=self.pos)
            .reshape(rows, cols)
            .copy()
        )
        self.pos += nbytes
        return out


def read_fasttext_bin(path: Path, data, limit, encoding: str, errors: str) -> Vectors:
    cur = _Cursor(path, data)
    (magic,) = struct.unpack_from("<i", data, 0) if len(data) >= 4 else (None,)
    if magic == FASTTEXT_MAGIC:
        _, version = cur.unpack("<2i")
        if version > FASTTEXT_VERSION:
            raise VectorFileError(f"{path}: fastText format version {version}; this reader knows up to 12")
        new_format = True
    else:
        if old_fasttext_header(data) is None:
            raise VectorFileError(
                f"{path}: byte 0: not a fastText .bin (no magic number, implausible header)"
            )
        new_format = False
    dim, _ws, _epoch, _min_count, _neg, _word_ngrams, _loss, model, bucket, minn, maxn, _lr = cur.unpack(
        "<12i"
    )
    cur.unpack("<d")  # sampling threshold t
    size, nwords, nlabels = cur.unpack("<3i")
    cur.unpack("<q")  # ntokens
    pruneidx_size = cur.unpack("<q")[0] if new_format else -1
    if nlabels > 0 or model == 3:
        raise VectorFileError(
            f"{path}: a supervised fastText classifier ({nlabels} labels), not word vectors"
        )
    words = []
    for i in range(size):
        end = data.find(b"\x00", cur.pos)
        if end < 0:
            raise VectorFileError(
                f"{path}: byte {cur.pos}: file ends inside dictionary entry {i + 1} of {size}"
            )
        raw = bytes(data[cur.pos : end])
        where = f"byte {cur.pos}"
        cur.pos = end + 1
        _count, entry_type = cur.unpack("<qb")
        if entry_type == 0:
            words.append(decode_word(path, raw, encoding, errors, where))
    if len(words) != nwords:
        raise VectorFileError(f"{path}: dictionary has {len(words)} words, header says {nwords}")
    if pruneidx_size > 0:
        cur.pos += 8 * pruneidx_size
    if new_format:
        (quant,) = cur.unpack("<?")
        if quant:
            raise VectorFileError(
                f"{path}: quantized fastText model (.ftz): not supported; use the .bin or .vec"
            )
    m, n = cur.unpack("<2q")
    if n != dim or (pruneidx_size < 0 and m != nwords + bucket):
        raise VectorFileError(
            f"{path}: byte {cur.pos - 16}: input matrix is {m} x {n}, expected {nwords + bucket} x {dim}"
        )
    table = cur.floats(m, n)
    subwords = Subwords(
        table, nwords=nwords, bucket=bucket, minn=minn, maxn=maxn, eos_ngrams=not new_format,
        word_index={w: i for i, w in enumerate(words)},
    )  # fmt: skip
    keep = min(nwords, limit) if limit else nwords
    matrix = np.empty((keep, dim), np.float32)
    for start in range(0, keep, 4096):
        ids, offsets = [], []
        for i in range(start, min(keep, start + 4096)):
            offsets.append(len(ids))
            ids += subwords.row_ids(words[i], i)
        counts = np.diff([*offsets, len(ids)])
        sums = np.add.reduceat(table[ids], offsets, axis=0)
        matrix[start : start + len(offsets)] = sums / counts[:, None].astype(np.float32)
    return Vectors(words[:keep], matrix, path=str(path), format="fasttext-bin", subwords=subwords)
