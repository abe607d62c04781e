"""Pretrained word vectors: read word2vec / GloVe / fastText files, align them to a tokenizer, write them back.

Formats (byte layouts: Mikolov et al.'s word2vec.c, Stanford GloVe, Facebook fastText; see README "Pretrained
embeddings"):
- `word2vec-text`: header `count dim`, then `word v1 ... vdim` per line (also fastText `.vec`, alias `fasttext-vec`);
- `word2vec-binary`: the same header, then per record `word` + space + dim little-endian float32, with or without a
  newline after each vector (word2vec.c writes one, gensim does not);
- `glove`: text rows without the header;
- `fasttext-bin`: Facebook's binary model (versions 11 and 12 with the magic number, and the older layout without
  it): the word rows and the subword buckets, so that any word, seen or not, gets a vector composed from its
  character n-grams exactly as fastText does (mean of the word's row and its n-gram rows; an unseen word: mean of
  its n-gram rows; zero when it has none).

`load_vectors(path, format=None, limit=None)` detects the format when not given and returns `Vectors` (`.words`,
`.matrix` float32 [N, dim], `.vector(word)`). Parsing is strict where gensim is silently wrong: a malformed row is
an error naming the file and the line (binary files: the byte offset); a file whose records do not add up (float64
vectors, a word with a space in a binary file) is an error, never a wrong matrix. Where the format allows it the
reader is lenient: CR LF line ends, trailing blanks, blank lines, a UTF-8 byte-order mark. Duplicate words: the
first wins, with one warning giving the count. Rows are parsed in chunks into a preallocated matrix, so peak memory
stays close to the matrix itself.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import mmap
import re
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FORMATS = ("word2vec-text", "word2vec-binary", "glove", "fasttext-vec", "fasttext-bin")
FASTTEXT_MAGIC = 793712314
FASTTEXT_VERSION = 12
EOS = "</s>"


class VectorFileError(ValueError):
    """A malformed or unsupported vector file; the message names the file and the line or byte offset."""


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


@dataclasses.dataclass
class Vectors:
    words: list[str]
    """One string per row, in file order (duplicates removed: the first occurrence wins)."""
    matrix: np.ndarray
    """float32 [N, dim]; for fastText `.bin`, the composed vectors (what fastText prints to `.vec`)."""
    path: str = ""
    format: str = ""
    subwords: Subwords | None = None
    """fastText `.bin` only: what `vector` composes unseen words from."""

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def vector(self, word: str) -> np.ndarray:
        """The vector of `word`; fastText `.bin`: composed from character n-grams when unseen. KeyError otherwise."""
        i = self.index.get(word)
        if i is not None:
            return self.matrix[i]
        if self.subwords is not None:
            return self.subwords.compose(word)
        raise KeyError(
            f"{word!r} is not in {self.path or 'these vectors'} ({len(self)} words, no subword information)"
        )


# ------------------------------------------------------------------------------------------ fastText n-grams


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


# ------------------------------------------------------------------------------------------ reading


def load_vectors(
    path: str | Path,
    format: str | None = None,
    limit: int | None = None,
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
) -> Vectors:
    """Read a vector file (format detected when None); `limit` keeps the first N words. `encoding`/`errors` decode
    the words (e.g. errors='replace' for word2vec.c files whose long words were cut mid-character)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such vector file")
    if format == "fasttext-vec":
        format = "word2vec-text"
    if format is not None and format not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)} or None (detect), got {format!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit: expected a positive number of words or None, got {limit}")
    data = _open_bytes(path)
    try:
        fmt = format or detect_format(path, data)
        if fmt == "fasttext-bin":
            vectors = _read_fasttext_bin(path, data, limit, encoding, errors)
        elif fmt == "word2vec-binary":
            vectors = _read_word2vec_binary(path, data, limit, encoding, errors)
        else:
            vectors = _read_text(
                path, data, header=fmt == "word2vec-text", limit=limit, encoding=encoding, errors=errors
            )
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    vectors.format = fmt
    return vectors


def _open_bytes(path: Path):
    """The file's bytes: memory-mapped, or decompressed in memory for .gz / .bz2."""
    if path.suffix in (".gz", ".bz2"):
        opener = gzip.open if path.suffix == ".gz" else bz2.open
        with opener(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        if path.stat().st_size == 0:
            raise VectorFileError(f"{path}: empty file")
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _header(data) -> tuple[int, int, int] | None:
    """(count, dim, offset after the header line) if the file starts with `count dim`, else None."""
    end = data.find(b"\n", 0, 256)
    line = bytes(data[: end if end >= 0 else min(len(data), 256)])
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    fields = line.split()
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[0]), int(fields[1]), (end + 1 if end >= 0 else len(data))
    return None


def _is_float(token: bytes) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def detect_format(path: Path, data) -> str:
    """fastText magic -> fasttext-bin; `count dim` header -> word2vec text or binary (by whether the first record
    parses as text); a first line of a word and numbers -> glove; a plausible old fastText header -> fasttext-bin."""
    if len(data) >= 4 and struct.unpack_from("<i", data, 0)[0] == FASTTEXT_MAGIC:
        return "fasttext-bin"
    header = _header(data)
    if header is not None:
        # text: the first row is a line of printable bytes ending in a number; binary float bytes are almost
        # never free of control bytes over a whole record, and a line ends only where a float holds 0x0A
        _, dim, start = header
        end = data.find(b"\n", start, start + 64 * (dim + 64) + 4096)
        line = bytes(data[start : end if end >= 0 else start + 64 * (dim + 64)]).rstrip(b"\r ")
        printable = not any(b < 0x20 and b != 0x09 for b in line)
        fields = line.split()
        if printable and len(fields) >= 2 and _is_float(fields[-1]):
            return "word2vec-text"
        return "word2vec-binary"
    end = data.find(b"\n", 0, 1 << 20)
    first = bytes(data[: end if end >= 0 else min(len(data), 1 << 20)]).rstrip().split(b" ")
    if len(first) >= 2 and all(_is_float(f) for f in first[1:]):
        return "glove"
    if _old_fasttext_header(data) is not None:
        return "fasttext-bin"
    raise VectorFileError(
        f"{path}: cannot tell the format (not word2vec text/binary with a `count dim` header, not GloVe text, not a "
        f"fastText .bin); pass format= one of {', '.join(FORMATS)}"
    )


def _old_fasttext_header(data):
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


class _Rows:
    """Collects rows into a preallocated float32 matrix, dropping duplicate words (the first wins)."""

    def __init__(self, path: Path, capacity: int, dim: int):
        self.path, self.dim = path, dim
        self.matrix = np.empty((capacity, dim), np.float32)
        self.words: list[str] = []
        self.seen: dict[str, int] = {}
        self.duplicates = 0
        self.nonfinite = 0

    def add_chunk(self, words: list[str], values: np.ndarray) -> None:
        start = len(self.words)
        # No duplicate within the chunk or with earlier chunks (the common case): no per-word Python loop.
        if len(set(words)) == len(words) and self.seen.keys().isdisjoint(words):
            self.seen.update(zip(words, range(start, start + len(words))))
            self.words.extend(words)
            self.matrix[start : len(self.words)] = values
            self.nonfinite += int((~np.isfinite(values).all(axis=1)).sum())
            return
        keep = []
        for k, w in enumerate(words):
            if w in self.seen:
                self.duplicates += 1
                continue
            self.seen[w] = len(self.words)
            self.words.append(w)
            keep.append(k)
        rows = values if len(keep) == len(words) else values[keep]
        start = len(self.words) - len(keep)
        self.matrix[start : len(self.words)] = rows
        self.nonfinite += int((~np.isfinite(rows).all(axis=1)).sum())

    def finish(self, fmt: str) -> Vectors:
        n = len(self.words)
        if n < self.matrix.shape[0]:
            self.matrix.resize((n, self.dim), refcheck=False)
        if self.duplicates:
            warnings.warn(
                f"{self.path}: {self.duplicates} duplicate word(s); kept the first occurrence of each",
                stacklevel=3,
            )
        if self.nonfinite:
            warnings.warn(f"{self.path}: {self.nonfinite} vector(s) contain nan or inf", stacklevel=3)
        return Vectors(self.words, self.matrix, path=str(self.path), format=fmt)


def _lines(data, start: int) -> Iterator[tuple[int, int, bytes]]:
    """(line number from 1, byte offset, line without its line end) from `start`."""
    number = data[:start].count(b"\n")
    pos, size = start, len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        if end < 0:
            end = size
        number += 1
        yield number, pos, bytes(data[pos:end]).rstrip(b"\r")
        pos = end + 1


def _decode(path: Path, word: bytes, encoding: str, errors: str, where: str) -> str:
    try:
        return word.decode(encoding, errors)
    except UnicodeDecodeError as e:
        raise VectorFileError(
            f"{path}: {where}: word {word!r} is not valid {encoding} ({e.reason} at byte {e.start}); pass "
            "errors='replace' (or 'ignore'), or the file's encoding, e.g. encoding='latin-1'"
        ) from None


def _read_text(path: Path, data, *, header: bool, limit, encoding: str, errors: str) -> Vectors:
    if header:
        parsed = _header(data)
        if parsed is None:
            raise VectorFileError(
                f"{path}:1: expected a `count dim` header (GloVe files have none: format='glove')"
            )
        count, dim, start = parsed
        if dim < 1:
            raise VectorFileError(f"{path}:1: header declares dimension {dim}")
    else:
        start = 3 if bytes(data[:3]) == b"\xef\xbb\xbf" else 0
        first = bytes(data[start : data.find(b"\n", start) if data.find(b"\n", start) >= 0 else len(data)])
        dim = len(first.rstrip().split(b" ")) - 1
        count = sum(1 for _, _, line in _lines(data, start) if line.strip())  # blank lines are skipped below
    capacity = min(count, limit) if limit else count
    rows = _Rows(path, capacity, dim)
    chunk_rows = max(16, min(8192, capacity // 64, (1 << 22) // (12 * dim)))  # <= ~4 MB of text per parse
    words: list[str] = []
    values: list[bytes] = []
    lines_in_chunk: list[tuple[int, bytes]] = []
    read = 0
    last_line = 0

    def flush():
        text = b" ".join(values).decode("ascii", "replace")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                parsed = np.fromstring(text, sep=" ", dtype=np.float32)
            except (ValueError, DeprecationWarning):
                parsed = None
        if parsed is None or parsed.size != len(values) * dim:
            for number, line in lines_in_chunk:  # find the row that does not parse
                vals = line.rsplit(b" ", dim)[1:]
                for v in vals:
                    if not _is_float(v):
                        raise VectorFileError(f"{path}:{number}: {v[:40]!r} is not a number")
            raise VectorFileError(
                f"{path}: rows {lines_in_chunk[0][0]}..{lines_in_chunk[-1][0]} do not parse"
            )
        rows.add_chunk(words, parsed.reshape(len(words), dim))
        words.clear(), values.clear(), lines_in_chunk.clear()

    for number, _, line in _lines(data, start):
        if read == capacity:
            if not limit and line.strip():
                extra = 1 + sum(1 for _, _, rest in _lines(data, _offset_after(data, number)) if rest.strip())
                warnings.warn(
                    f"{path}: the header declares {count} vectors but {extra} more non-empty line(s) follow "
                    f"(from line {number}); read the first {count}, as gensim does",
                    stacklevel=3,
                )
            break
        line = line.rstrip(b" ")
        if not line:
            continue
        last_line = number
        if line[:1] == b" " or line[:1] == b"\t":
            raise VectorFileError(f"{path}:{number}: the line starts with a blank (empty word)")
        if b"\t" in line:
            raise VectorFileError(
                f"{path}:{number}: tab in the row; fields must be separated by single spaces"
            )
        spaces = line.count(b" ")
        if spaces == dim:
            word, _, vals = line.partition(b" ")
            if b"  " in vals:
                raise VectorFileError(f"{path}:{number}: empty field (two spaces in a row)")
        elif spaces > dim:  # a word with spaces (GloVe 840B has some), or a row with too many numbers
            parts = line.rsplit(b" ", dim)
            word, vals = parts[0], b" ".join(parts[1:])
            head = word.split(b" ")
            if b"" in parts[1:] or b"" in head:
                raise VectorFileError(f"{path}:{number}: empty field (two spaces in a row)")
            if all(_is_float(h) for h in head[1:]):
                raise VectorFileError(f"{path}:{number}: {spaces} values, expected {dim}")
        else:
            raise VectorFileError(f"{path}:{number}: {spaces} values, expected {dim}")
        words.append(_decode(path, word, encoding, errors, f"line {number}"))
        values.append(vals)
        lines_in_chunk.append((number, line))
        read += 1
        if len(words) == chunk_rows:
            flush()
    if words:
        flush()
    if read < capacity:
        raise VectorFileError(
            f"{path}:{last_line + 1}: the header declares {count} vectors but the file ends after {read}"
        )
    return rows.finish("word2vec-text" if header else "glove")


def _offset_after(data, number: int) -> int:
    pos = -1
    for _ in range(number):
        pos = data.find(b"\n", pos + 1)
    return pos + 1 if pos >= 0 else len(data)


_CONTROL = re.compile(rb"[\x00-\x1f]")  # a control byte: no word has one


def _read_word2vec_binary(path: Path, data, limit, encoding: str, errors: str) -> Vectors:
    parsed = _header(data)
    if parsed is None:
        raise VectorFileError(f"{path}: byte 0: expected a `count dim` header line")
    count, dim, pos = parsed
    capacity = min(count, limit) if limit else count
    rows = _Rows(path, capacity, dim)
    record = 4 * dim
    size = len(data)
    chunk = max(16, min(8192, capacity // 64, (1 << 22) // record))
    words: list[str] = []
    block = np.empty((chunk, dim), np.float32)
    raw = memoryview(block).cast("B")  # the block's bytes: each record's floats are copied in as they are
    little = np.dtype("<f4") == np.dtype(np.float32)
    for i in range(capacity):
        while pos < size and data[pos] in (0x0A, 0x0D):  # word2vec.c writes "\n" after each vector
            pos += 1
        space = data.find(b" ", pos, pos + 4096)
        if space < 0 or space + 1 + record > size:
            raise VectorFileError(
                f"{path}: byte {pos}: the header declares {count} vectors but the file ends after {i}"
                + ("" if space >= 0 or pos >= size else " (or a word is longer than 4096 bytes)")
            )
        word = bytes(data[pos:space])
        if not word or _CONTROL.search(word):
            raise VectorFileError(
                f"{path}: byte {pos}: record {i + 1} has the word {word[:40]!r}: not a word2vec binary file of "
                f"{dim} float32 values per vector (float64 values? a word containing a space?)"
            )
        words.append(_decode(path, word, encoding, errors, f"byte {pos}"))
        k = len(words) - 1
        if little:
            raw[k * record : (k + 1) * record] = data[space + 1 : space + 1 + record]
        else:
            block[k] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + record
        if len(words) == chunk:
            rows.add_chunk(words, block)
            words = []
    if words:
        rows.add_chunk(words, block[: len(words)])
    if not limit or capacity == count:
        rest = bytes(data[pos : pos + 64]).strip(b"\r\n")
        if rest:
            raise VectorFileError(
                f"{path}: byte {pos}: {size - pos} bytes follow the {count} declared vectors: not a word2vec binary "
                f"file of {dim} float32 values per vector (float64 values? a word containing a space? a wrong "
                "count in the header?)"
            )
    return rows.finish("word2vec-binary")


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


def _read_fasttext_bin(path: Path, data, limit, encoding: str, errors: str) -> Vectors:
    cur = _Cursor(path, data)
    (magic,) = struct.unpack_from("<i", data, 0) if len(data) >= 4 else (None,)
    if magic == FASTTEXT_MAGIC:
        _, version = cur.unpack("<2i")
        if version > FASTTEXT_VERSION:
            raise VectorFileError(f"{path}: fastText format version {version}; this reader knows up to 12")
        new_format = True
    else:
        if _old_fasttext_header(data) is None:
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
            words.append(_decode(path, raw, encoding, errors, where))
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


# ------------------------------------------------------------------------------------------ writing


def save_vectors(path: str | Path, words: list[str], matrix: np.ndarray, *, binary: bool = False) -> Path:
    """Write word2vec text (`word v1 ... vdim`, shortest float32 repr, as gensim writes) or binary (word, space,
    dim little-endian float32, no newline between records, as gensim writes)."""
    path = Path(path)
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(words):
        raise ValueError(f"save_vectors: {len(words)} words but a matrix of shape {matrix.shape}")
    for w in words:
        if not w or w != w.strip() or "\n" in w or (binary and " " in w):
            raise ValueError(
                f"save_vectors: the word {w!r} cannot be written to a word2vec file (empty or blanks)"
            )
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(f"{len(words)} {matrix.shape[1]}\n".encode())
        if binary:
            little = matrix.astype("<f4")
            for w, row in zip(words, little):
                f.write(w.encode("utf-8") + b" " + row.tobytes())
        else:
            for w, row in zip(words, matrix):
                f.write((w + " " + " ".join(map(str, row)) + "\n").encode())  # str(float32): shortest repr
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------ alignment

UNMATCHED = ("random", "zeros", "mean")
WORD_START = "\u2581"  # SentencePiece's word-start marker


def token_text(piece: str) -> str | None:
    """The word a tokenizer piece stands for: without SentencePiece's `▁` and the word tokenizer's leading space;
    None for specials (`<unk>`, `<doc>`, byte fallbacks `<0x0A>`) and whitespace-only pieces."""
    if len(piece) > 2 and piece.startswith("<") and piece.endswith(">"):
        return None
    text = piece.replace(WORD_START, " ").strip()
    return text or None


def align(
    vectors: Vectors,
    pieces: list[str],
    *,
    unmatched: str = "random",
    casefold: bool = True,
    subwords: bool = True,
    counts: np.ndarray | None = None,
    seed: int = 0,
    top: int = 20,
) -> tuple[np.ndarray, dict]:
    """Rows for a tokenizer's vocabulary: [len(pieces), dim] float32 and a coverage report.

    Each piece is matched by its text (`token_text`): exactly, then case-folded (the first such word in file
    order, i.e. the most frequent in frequency-sorted files), then (fastText `.bin`, `subwords=True`) composed from
    its character n-grams. Unmatched rows: `random` N(0, s²) with s the standard deviation of the matched
    vectors' entries, `zeros`, or `mean` (the mean matched vector). `counts` (occurrences of each id in the train
    split) orders the report's most frequent unmatched tokens and gives the share of training tokens covered."""
    if unmatched not in UNMATCHED:
        raise ValueError(f"unmatched: expected one of {', '.join(UNMATCHED)}, got {unmatched!r}")
    folded: dict[str, int] = {}
    if casefold:
        for i, w in enumerate(vectors.words):
            folded.setdefault(w.casefold(), i)
    out = np.zeros((len(pieces), vectors.dim), np.float32)
    how = np.full(len(pieces), "", dtype=object)
    for i, piece in enumerate(pieces):
        text = token_text(piece)
        if text is None:
            how[i] = "special"
            continue
        row = vectors.index.get(text)
        if row is not None:
            out[i], how[i] = vectors.matrix[row], "exact"
            continue
        row = folded.get(text.casefold()) if casefold else None
        if row is not None:
            out[i], how[i] = vectors.matrix[row], "casefold"
            continue
        if subwords and vectors.subwords is not None:
            composed = vectors.subwords.compose(text)
            if np.any(composed):
                out[i], how[i] = composed, "subword"
                continue
        how[i] = "unmatched"
    matched = np.isin(how, ("exact", "casefold", "subword"))
    fill = ~matched
    if matched.any():
        reference = out[matched]
        if unmatched == "random":
            std = float(reference.std())
            out[fill] = np.random.default_rng(seed).normal(0.0, std, (int(fill.sum()), vectors.dim))
        elif unmatched == "mean":
            out[fill] = reference.mean(axis=0)
    report = {k: int((how == k).sum()) for k in ("exact", "casefold", "subword", "unmatched", "special")}
    report.update(
        vocab=len(pieces), coverage=float(matched.mean()) if len(pieces) else 0.0, unmatched_init=unmatched
    )
    missing = np.flatnonzero(how == "unmatched")
    if counts is not None:
        counts = np.asarray(counts)
        total = counts.sum()
        report["token_coverage"] = float(counts[matched].sum() / total) if total else 0.0
        missing = missing[np.argsort(-counts[missing], kind="stable")]
        report["top_unmatched"] = [[pieces[i], int(counts[i])] for i in missing[:top]]
    else:
        report["top_unmatched"] = [[pieces[i], None] for i in missing[:top]]
    return out, report


def vector_dim(path: str | Path, format: str | None = None) -> int:
    """The vectors' dimension from the file's header or first row, without reading the rest."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such vector file")
    data = _open_bytes(path)
    try:
        fmt = format or detect_format(path, data)
        if fmt == "fasttext-bin":
            offset = 8 if struct.unpack_from("<i", data, 0)[0] == FASTTEXT_MAGIC else 0
            return struct.unpack_from("<i", data, offset)[0]
        if fmt == "glove":
            end = data.find(b"\n")
            return (
                len(
                    bytes(data[: end if end >= 0 else len(data)]).lstrip(b"\xef\xbb\xbf").rstrip().split(b" ")
                )
                - 1
            )
        header = _header(data)
        if header is None:
            raise VectorFileError(f"{path}:1: expected a `count dim` header")
        return header[1]
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
