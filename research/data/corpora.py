"""Text corpora: documents per split ("train", "valid", "test"), registered by name in CORPORA.

A corpus config is a frozen dataclass with `validate()` (checks paths, reads nothing heavy), `fingerprint()` (what
keys its prepared token files: cheap, from the source files' sizes and modification times or a hash of a small
source) and `load() -> Corpus`.
    wiki-sample   the English Wikipedia sample shipped in gensim's test data (the default; no network)
    text          a UTF-8 file (contiguous split at line boundaries) or a folder of *.txt files (one document each)
    wikitext      a WikiText-2/103 folder; documents start at top-level ` = Title = ` headings
    files         text of any size, streamed: files, folders or globs, compressed or not, documents split by a
                  stated rule and assigned to splits by a hash of their text
Documents keep every byte that bits-per-byte is measured on; nothing is normalised after loading.
Expensive extraction is cached under `cache_dir()` with atomic writes, so concurrent runs share it safely.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib
import importlib.util
import io
import json
import re
from pathlib import Path
from typing import ClassVar, Literal

from research.config import ConfigError
from research.registry import Registry
from research.runtime.cache import atomic_write, cache_dir

SPLITS = ("train", "valid", "test")
CORPORA: Registry[type[CorpusConfig]] = Registry("corpus")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Documents per split; `key` is a content hash used to key tokenized caches."""

    name: str
    splits: dict[str, list[str]]

    def __post_init__(self):
        if sorted(self.splits) != sorted(SPLITS):
            raise ValueError(f"corpus {self.name!r}: expected splits {SPLITS}, got {sorted(self.splits)}")

    def documents(self, split: str) -> list[str]:
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return self.splits[split]

    def num_bytes(self, split: str) -> int:
        return sum(len(doc.encode("utf-8")) for doc in self.documents(split))

    @property
    def key(self) -> str:
        digest = hashlib.sha256()
        for split in SPLITS:
            digest.update(f"\0{split}\0{len(self.splits[split])}\0".encode())
            for doc in self.splits[split]:
                digest.update(doc.encode("utf-8") + b"\0")
        return digest.hexdigest()


def sample_documents(docs: list[str], max_bytes: int) -> list[str]:
    """Whole documents spread over the split whose UTF-8 bytes total <= max_bytes, in their split order: documents
    are taken in the order of their content's sha256 (deterministic, and independent of where they stand), each
    one that still fits; at least one (the smallest, when none fits)."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    sizes = [len(doc.encode("utf-8")) for doc in docs]
    order = sorted(range(len(docs)), key=lambda i: hashlib.sha256(docs[i].encode("utf-8")).hexdigest())
    kept, total = set(), 0
    for i in order:
        if total + sizes[i] <= max_bytes:
            kept.add(i)
            total += sizes[i]
    if not kept and docs:
        kept = {min(range(len(docs)), key=sizes.__getitem__)}
    return [doc for i, doc in enumerate(docs) if i in kept]


def read_utf8(path: Path, *, field: str = "data.corpus.path") -> str:
    """File contents as str; malformed UTF-8 raises ConfigError naming the file, byte offset and line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{field}: {path} is not valid UTF-8 at byte {e.start} (line {line}): {e.reason}"
        ) from None


def stat_fingerprint(files, config) -> str:
    """A corpus's key from its files' paths, sizes and modification times and its options: no file is read."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    for path in files:
        info = Path(path).stat()
        digest.update(f"\0{Path(path).resolve()}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    return digest.hexdigest()


def _require(path: Path, *, field: str = "data.corpus.path") -> None:
    if not path.exists():
        raise ConfigError(f"{field}: {path} does not exist")


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
        raise ConfigError(
            "data.corpus.valid_fraction, data.corpus.test_fraction: expected both > 0 with sum < 1, got "
            f"{valid_fraction} and {test_fraction}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    """Base class of registered corpus configs."""

    streamed: ClassVar[bool] = False
    """Whether `load()` streams the documents from disk (never held whole) rather than listing them."""

    def validate(self) -> None:
        """Raise ConfigError naming the field when a path is missing; reads nothing heavy."""

    def fingerprint(self) -> str:
        """A key that changes whenever the documents could (default: a hash of every document)."""
        return self.load().key

    def load(self) -> Corpus:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------ wiki-sample

WIKI_SAMPLE_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKI_SAMPLE_VERSION = "wiki-sample-v1"  # bump when the cleanup below changes: invalidates the cache
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_wiki_text(text: str) -> str:
    """Markup-free article text (from gensim's filter_wiki) -> drop bold/italic quotes, strip lines, <=1 blank."""
    text = text.replace("'''", "").replace("''", "")
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip()


def split_by_hash(titles: list[str], valid_fraction: float, test_fraction: float) -> dict[str, list[int]]:
    """Indices per split: order titles by sha1, then the first go to valid, the next to test, the rest to train.

    Depends only on the titles, so it is the same on every machine and Python version.
    """
    order = sorted(range(len(titles)), key=lambda i: hashlib.sha1(titles[i].encode()).hexdigest())
    n_valid = max(1, round(valid_fraction * len(titles)))
    n_test = max(1, round(test_fraction * len(titles)))
    return {
        "valid": sorted(order[:n_valid]),
        "test": sorted(order[n_valid : n_valid + n_test]),
        "train": sorted(order[n_valid + n_test :]),
    }


@CORPORA.register("wiki-sample")
@dataclasses.dataclass(frozen=True, kw_only=True)
class WikiSampleConfig(CorpusConfig):
    """English Wikipedia sample from gensim's test data, split by article (sha1 of the title)."""

    min_chars: int = 500
    """Articles shorter than this after cleanup (stubs, disambiguation leftovers) are dropped."""
    valid_fraction: float = 0.07
    """Fraction of the articles in the validation split (at least one); 0.07 = 7 of 105 articles, ~138 KB."""
    test_fraction: float = 0.07
    """Fraction of the articles in the test split (at least one); 0.07 = 7 of 105 articles, ~221 KB."""

    def source(self) -> Path:
        """The bz2 dump inside the installed gensim package (what gensim.test.utils.datapath returns)."""
        # located without importing gensim (2 s), so that validating a config stays instant
        spec = importlib.util.find_spec("gensim")
        if spec is None or spec.origin is None:
            raise ConfigError("data.corpus: wiki-sample needs the gensim package (pip install gensim)")
        return Path(spec.origin).parent / "test" / "test_data" / WIKI_SAMPLE_FILE

    def validate(self) -> None:
        path = self.source()
        if not path.exists():
            raise ConfigError(f"data.corpus: gensim's test file {path} is missing (reinstall gensim)")
        _check_fractions(self.valid_fraction, self.test_fraction)

    def fingerprint(self) -> str:
        """The bz2 source's hash, the cleanup's version and the options."""
        options = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(
            f"{_sha256_file(self.source())}|{WIKI_SAMPLE_VERSION}|{options}".encode()
        ).hexdigest()

    def load(self) -> Corpus:
        self.validate()
        path = self.source()
        key = self.fingerprint()
        cached = cache_dir() / "corpora" / f"wiki-sample-{key[:24]}.json"
        if cached.exists():
            return Corpus("wiki-sample", json.loads(cached.read_text(encoding="utf-8")))
        splits = self._extract(path)
        atomic_write(cached, json.dumps(splits, ensure_ascii=False).encode("utf-8"))
        return Corpus("wiki-sample", splits)

    def _extract(self, path: Path) -> dict[str, list[str]]:
        import bz2

        from gensim.corpora.wikicorpus import extract_pages, filter_wiki

        titles, texts = [], []
        with bz2.open(path) as f:
            for title, raw, _page_id in extract_pages(f, filter_namespaces=("0",)):
                if raw.lstrip()[:9].upper() == "#REDIRECT":
                    continue
                text = clean_wiki_text(filter_wiki(raw))
                if len(text) >= self.min_chars:
                    titles.append(title)
                    texts.append(text)
        parts = split_by_hash(titles, self.valid_fraction, self.test_fraction)
        return {split: [texts[i] for i in parts[split]] for split in SPLITS}


# ----------------------------------------------------------------------------------------------- text


def split_contiguous(text: str, valid_fraction: float, test_fraction: float) -> list[str]:
    """[train, valid, test] = consecutive pieces of `text` cut at the line ends after the fraction points."""

    def cut(fraction: float) -> int:
        pos = int(len(text) * fraction)
        end = text.find("\n", pos)
        return len(text) if end < 0 else end + 1

    a = cut(1 - valid_fraction - test_fraction)
    b = max(a, cut(1 - test_fraction))
    return [text[:a], text[a:b], text[b:]]


def split_by_position(sizes: list[int], valid_fraction: float, test_fraction: float) -> list[int]:
    """Split index (0 train, 1 valid, 2 test) per document, from where its first byte lies in the total.

    Splits are contiguous runs of documents; with >= 3 documents none is empty (the first document is train,
    the last two reach valid and test).
    """
    total, start, which = sum(sizes), 0, []
    # split points in whole bytes, so that 0.7 of 1100 bytes is 770 despite float rounding
    bounds = (round((1 - valid_fraction - test_fraction) * total), round((1 - test_fraction) * total))
    for i, size in enumerate(sizes):
        k = sum(start >= b for b in bounds)
        which.append(min(max(k, 3 - (len(sizes) - i)), i))
        start += size
    return which


@CORPORA.register("text")
@dataclasses.dataclass(frozen=True, kw_only=True)
class TextConfig(CorpusConfig):
    """Local UTF-8 text. A file is cut contiguously (train, valid, test) at line boundaries, one document per
    split; a folder's *.txt files (sorted by name) are documents, assigned by the position of their first byte."""

    path: str
    """A UTF-8 text file or a folder of *.txt files."""
    valid_fraction: float = 0.05
    """Fraction of the characters (file) or bytes (folder) in the validation split."""
    test_fraction: float = 0.05
    """Fraction of the characters (file) or bytes (folder) in the test split."""

    def _files(self) -> list[Path]:
        path = Path(self.path).expanduser()
        _require(path)
        if path.is_dir():
            files = sorted(path.glob("*.txt"))
            if len(files) < 3:
                raise ConfigError(
                    f"data.corpus.path: folder {path} has {len(files)} *.txt file(s); need at least 3 "
                    "(one document per split), or name a single file"
                )
            return files
        return [path]

    def validate(self) -> None:
        _check_fractions(self.valid_fraction, self.test_fraction)
        self._files()

    def fingerprint(self) -> str:
        return stat_fingerprint(self._files(), self)

    def load(self) -> Corpus:
        self.validate()
        files = self._files()
        if len(files) == 1 and not Path(self.path).expanduser().is_dir():
            pieces = split_contiguous(read_utf8(files[0]), self.valid_fraction, self.test_fraction)
            if not all(pieces):
                sizes = ", ".join(f"{s}={len(p)}" for s, p in zip(SPLITS, pieces))
                raise ConfigError(
                    f"data.corpus.path: {files[0]} is too short to split by lines ({sizes} chars)"
                )
            return Corpus("text", {split: [piece] for split, piece in zip(SPLITS, pieces)})
        docs = [read_utf8(f) for f in files]
        which = split_by_position(
            [len(d.encode("utf-8")) for d in docs], self.valid_fraction, self.test_fraction
        )
        return Corpus(
            "text", {split: [d for d, w in zip(docs, which) if w == k] for k, split in enumerate(SPLITS)}
        )


# ------------------------------------------------------------------------------------------- wikitext

WIKITEXT_NAMES = {s: (f"wiki.{s}.tokens", f"wiki.{s}.raw", f"{s}.txt") for s in SPLITS}
_TOP_HEADING = re.compile(r"^ = (?!=).*(?<!=) = $")  # " = Title = " but not " = = Section = = "


def split_wikitext_articles(text: str) -> list[str]:
    """Cut a WikiText file before each top-level heading line; concatenating the result gives `text` back."""
    docs, current = [], []
    for line in text.splitlines(keepends=True):
        if _TOP_HEADING.match(line.rstrip("\r\n")) and any(s.strip() for s in current):
            docs.append("".join(current))
            current = []
        current.append(line)
    if current:
        docs.append("".join(current))
    return docs


@CORPORA.register("wikitext")
@dataclasses.dataclass(frozen=True, kw_only=True)
class WikiTextConfig(CorpusConfig):
    """A WikiText-2 / WikiText-103 folder (Merity et al. 2016, arXiv:1609.07843), one document per article."""

    path: str
    """Folder holding wiki.{train,valid,test}.tokens (or .raw, or {train,valid,test}.txt)."""

    def _files(self) -> dict[str, Path]:
        folder = Path(self.path).expanduser()
        _require(folder)
        if not folder.is_dir():
            raise ConfigError(f"data.corpus.path: {folder} is not a folder")
        found, missing = {}, []
        for split, names in WIKITEXT_NAMES.items():
            hits = [folder / n for n in names if (folder / n).is_file()]
            if hits:
                found[split] = hits[0]
            else:
                missing.append(" or ".join(names))
        if missing:
            raise ConfigError(
                f"data.corpus.path: {folder} lacks WikiText file(s); looked for {'; '.join(missing)}"
            )
        return found

    def validate(self) -> None:
        self._files()

    def fingerprint(self) -> str:
        return stat_fingerprint(sorted(self._files().values()), self)

    def load(self) -> Corpus:
        files = self._files()
        return Corpus("wikitext", {s: split_wikitext_articles(read_utf8(files[s])) for s in SPLITS})


# ---------------------------------------------------------------------------------------------- files

OPENERS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma", ".zst": "zstandard", ".zstd": "zstandard"}


def open_text(path: Path, encoding: str = "utf-8"):
    """A text stream of a file, decompressed while read by its suffix (.gz, .bz2, .xz; .zst with the zstandard
    package); newlines kept as they are."""
    kind = OPENERS.get(path.suffix)
    if kind == "zstandard":
        try:
            import zstandard
        except ImportError:
            raise ConfigError(f"data.corpus.path: {path} is zstd-compressed: pip install zstandard") from None
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))  # noqa: SIM115  (closed with the stream)
    elif kind is not None:
        raw = importlib.import_module(kind).open(path, "rb")
    else:
        raw = open(path, "rb")  # noqa: SIM115  (closed with the stream)
    return io.TextIOWrapper(
        io.BufferedReader(raw) if kind == "zstandard" else raw, encoding=encoding, newline=""
    )


def split_of(document: str, valid_fraction: float, test_fraction: float) -> str:
    """A document's split from the first 8 bytes of its text's sha1 as a fraction: the same document is always in
    the same split (duplicates never leak between splits), and the split does not depend on where it stands."""
    h = int.from_bytes(hashlib.sha1(document.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "valid" if h < valid_fraction else "test" if h < valid_fraction + test_fraction else "train"


@dataclasses.dataclass(frozen=True)
class StreamedCorpus:
    """Documents per split, read from the files each time `documents(split)` is iterated (never held whole)."""

    name: str
    config: FilesConfig

    def documents(self, split: str):
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return (doc for label, doc in self.labelled() if label == split)

    def labelled(self):
        """(split, document) of every document, in one pass over the files."""
        c = self.config
        return ((split_of(d, c.valid_fraction, c.test_fraction), d) for d in c.stream())

    @property
    def key(self) -> str:
        return self.config.fingerprint()


@CORPORA.register("files")
@dataclasses.dataclass(frozen=True, kw_only=True)
class FilesConfig(CorpusConfig):
    """Text of any size, streamed from files (never read whole): a file, a folder (its files, recursively, in sorted
    order) or a glob; .gz, .bz2, .xz and .zst files are decompressed while read. Documents are cut by `documents`
    and each goes to a split by a hash of its text (`split_of`), so no split needs the corpus's size."""

    streamed: ClassVar[bool] = True

    path: str
    """A file, a folder or a glob pattern (e.g. `/data/c4/*.json.gz` is read as text)."""
    documents: Literal["blank_line", "line", "file"] = "blank_line"
    """How text becomes documents: paragraphs separated by an empty line (the empty line belongs to no document),
    one per line, or one per file."""
    valid_fraction: float = 0.005
    """Expected fraction of the documents in the validation split."""
    test_fraction: float = 0.005
    """Expected fraction of the documents in the test split."""
    encoding: str = "utf-8"

    def files(self) -> list[Path]:
        path = Path(self.path).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.exists():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not found:
            raise ConfigError(f"data.corpus.path: {self.path} matches no file")
        return found

    def validate(self) -> None:
        _check_fractions(self.valid_fraction, self.test_fraction)
        self.files()

    def fingerprint(self) -> str:
        return stat_fingerprint(self.files(), self)

    def load(self) -> StreamedCorpus:
        self.validate()
        return StreamedCorpus("files", self)

    def stream(self):
        """Every document of every file, in order."""
        for path in self.files():
            try:
                with open_text(path, self.encoding) as text:
                    yield from self._documents(text)
            except UnicodeDecodeError as e:
                raise ConfigError(
                    f"data.corpus.path: {path} is not valid {self.encoding} ({e.reason})"
                ) from None

    def _documents(self, text):
        if self.documents == "file":
            yield text.read()
            return
        current = []
        for line in text:
            if self.documents == "line":
                yield line
            elif line.strip("\r\n"):
                current.append(line)
            elif current:
                yield "".join(current)
                current = []
        if current:
            yield "".join(current)


def resolve_corpus(spec, *, field: str = "data.corpus") -> CorpusConfig:
    """Spec dict or string -> registered corpus config (unknown names list the valid ones)."""
    from research.config import resolve_spec

    return resolve_spec(CORPORA, spec, field=field)
