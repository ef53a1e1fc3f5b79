"""CLIP's byte-level BPE tokenizer and ComfyUI's prompt syntax.

The vocabulary is OpenAI's `bpe_simple_vocab_16e6.txt.gz`, read as a data file from a package that ships
it, never importing the package's code: open-clip-torch (`open_clip`) when it is installed, else the `clip`
module of `openai-clip` (vidgraph's dependency) or `clip-anytorch`. The maintained ones, open-clip-torch and
clip-anytorch, both require torchvision, which the CPU build of torch cannot use from PyPI, so vidgraph
depends on `openai-clip` (ftfy / regex / tqdm only); all three ship the same file (its SHA-256 is checked).
256 byte symbols, the same with an end-of-word mark, 48,894 merges, then <|startoftext|> (49406) and
<|endoftext|> (49407).

Text is cleaned as Hugging Face's CLIPTokenizer does without ftfy (ComfyUI's setting): NFC, control
characters dropped, CJK ideographs spaced, whitespace collapsed, lower case; then split by CLIP's
pattern and each piece BPE-merged.

Prompt syntax (ComfyUI's `tokenize_with_weights`):
- `(text)` multiplies the weight by 1.1, nested brackets multiply again; `(text:1.3)` sets it;
  `\\(` and `\\)` are literal brackets. `[text]` is plain text (ComfyUI gives it no meaning).
- `embedding:name` (at the start or after a space or newline) inserts a textual-inversion embedding
  from the embeddings folders.
- Each weighted segment is one group of tokens; groups fill chunks of 75 tokens between a start and
  an end token (77 in all), padded. A group shorter than 8 tokens that does not fit moves whole to
  the next chunk; a longer one is split across chunks.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import re as std_re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import regex

START_TOKEN, END_TOKEN = 49406, 49407
CHUNK_LENGTH = 77
MAX_WORD_LENGTH = 8  # groups at least this long may be split across chunks
EMBEDDING_PREFIX = "embedding:"
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_PACKAGES = ("open_clip", "clip")  # open-clip-torch; openai-clip or clip-anytorch (both install `clip`)
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
log = logging.getLogger(__name__)
PIECES = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                       regex.IGNORECASE)


class PromptSyntaxError(ValueError):
    """A prompt the weight syntax cannot read; `position` is the offending character's index."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} at character {position + 1}")
        self.position = position


def vocab_path(packages=VOCAB_PACKAGES) -> Path:
    """The BPE file inside the first installed package of `packages` that holds an intact copy."""
    for name in packages:
        spec = importlib.util.find_spec(name)  # finds the package without running its __init__
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / VOCAB_FILE
        if path.is_file() and _sha256(path) == VOCAB_SHA256:
            return path
        log.warning("%s: not CLIP's BPE vocabulary (missing or altered); trying the next package", path)
    raise RuntimeError(f"CLIP's BPE vocabulary ({VOCAB_FILE}) comes from the 'openai-clip' package (or "
                       "open-clip-torch / clip-anytorch): install vidgraph's dependencies")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters: printable bytes map to themselves
    and come first (the vocabulary's ids follow this order), the others to chr(256 + n)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


@lru_cache(maxsize=1)
def vocabulary() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """(symbol -> id, merge pair -> rank)."""
    lines = gzip.open(vocab_path(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    symbols += [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges]
    symbols += ["<|startoftext|>", "<|endoftext|>"]
    return {s: i for i, s in enumerate(symbols)}, {pair: rank for rank, pair in enumerate(merges)}


def clean_text(text: str) -> str:
    """Hugging Face's CLIP text cleaning without ftfy."""
    text = unicodedata.normalize("NFC", text)
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r"):
            continue
        if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return " ".join("".join(out).split()).lower()


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
                                            (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


class BPE:
    """text -> CLIP token ids (no start / end tokens)."""

    def __init__(self):
        self.encoder, self.ranks = vocabulary()
        self.decoder = {i: s for s, i in self.encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}

    def merge(self, piece: str) -> list[str]:
        """Byte-pair merges of one piece, lowest rank first; the last symbol carries </w>."""
        if piece in self.cache:
            return self.cache[piece].split(" ")
        word = list(piece[:-1]) + [piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[piece] = " ".join(word)
        return word

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in PIECES.findall(clean_text(text)):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.merge(piece))
        return ids

    def decode(self, ids) -> str:
        words = "".join(self.decoder[int(i)] for i in ids).split("</w>")
        return " ".join(bytearray(self.byte_decoder[c] for c in w if c in self.byte_decoder).decode("utf-8", "replace")
                        for w in words).strip()


@lru_cache(maxsize=1)
def shared_bpe() -> BPE:
    return BPE()


# ------------------------------------------------------------------------------------- prompt syntax

ESCAPED_CLOSE, ESCAPED_OPEN = "\0\1", "\0\2"


def check_brackets(text: str) -> None:
    """Unescaped brackets must pair up (ComfyUI would silently read them as text)."""
    opened = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "()":
            i += 2
            continue
        if text[i] == "(":
            opened.append(i)
        elif text[i] == ")":
            if not opened:
                raise PromptSyntaxError("')' closes no '(' (write \\) for a literal bracket)", i)
            opened.pop()
        i += 1
    if opened:
        raise PromptSyntaxError("'(' is never closed (write \\( for a literal bracket)", opened[-1])


def split_brackets(text: str) -> list[str]:
    """Top-level pieces: plain runs and whole '(...)' groups."""
    pieces, current, depth = [], "", 0
    for ch in text:
        if ch == "(":
            if depth == 0 and current:
                pieces.append(current)
                current = ""
            current += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            current += ch
            if depth == 0:
                pieces.append(current)
                current = ""
        else:
            current += ch
    if current:
        pieces.append(current)
    return pieces


def weighted_segments(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """ComfyUI's reading of weights: [(segment, weight)] in order (escapes still encoded)."""
    out = []
    for piece in split_brackets(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner, inner_weight = piece[1:-1], weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out += weighted_segments(inner, inner_weight)
        else:
            out.append((piece, weight))
    return out


def parse_prompt(text: str) -> list[tuple[str, float]]:
    """[(text, weight)] with escapes resolved; PromptSyntaxError for unbalanced brackets."""
    check_brackets(text)
    escaped = text.replace("\\)", ESCAPED_CLOSE).replace("\\(", ESCAPED_OPEN)
    return [(s.replace(ESCAPED_CLOSE, ")").replace(ESCAPED_OPEN, "("), w) for s, w in weighted_segments(escaped)]


@dataclass
class Tokenizer:
    """One text encoder's tokenizer: ComfyUI's SDTokenizer settings.

    `pad_token` is END_TOKEN for CLIP-L (pad with end) and 0 for the OpenCLIP towers (SD 2.x, SDXL's
    bigG). `embedding_size` / `embedding_key` pick the right vectors out of an embedding file.
    """
    pad_token: int = END_TOKEN
    embedding_size: int = 768
    embedding_key: str = "clip_l"
    max_length: int = CHUNK_LENGTH
    embeddings: object = None  # callable(name) -> tensor [n, D] or None (textual inversions)

    def tokenize(self, text: str) -> list[list[tuple]]:
        """Chunks of `max_length` (token id or embedding vector, weight) pairs."""
        groups = []
        for segment, weight in parse_prompt(text):
            for word in split_embeddings(segment):
                if word.startswith(EMBEDDING_PREFIX) and self.embeddings is not None:
                    words = word[len(EMBEDDING_PREFIX):].strip("\n").split()
                    name, leftover = (words[0] if words else ""), " ".join(words[1:])
                    vectors, leftover = self._embedding(name, leftover)
                    if vectors is None:
                        log.warning("embedding:%s was not found in the embeddings folders; ignored", name)
                    else:
                        groups.append([(v, weight) for v in vectors])
                    if not leftover:
                        continue
                    word = leftover
                groups.append([(t, weight) for t in shared_bpe().encode(word)])
        return self.chunk(groups)

    def _embedding(self, name: str, leftover: str):
        vectors = self.embeddings(name, self.embedding_size, self.embedding_key)
        if vectors is None:
            stripped = name.strip(",")
            if stripped != name:  # "embedding:name," : the comma is text again
                vectors = self.embeddings(stripped, self.embedding_size, self.embedding_key)
                leftover = f"{name[len(stripped):]} {leftover}"
        if vectors is not None and vectors.ndim == 1:
            vectors = vectors[None]
        return vectors, leftover

    def chunk(self, groups) -> list[list[tuple]]:
        room = self.max_length - 1  # the end token
        chunks, batch = [], [(START_TOKEN, 1.0)]
        chunks.append(batch)
        for group in groups:
            large = len(group) >= MAX_WORD_LENGTH
            while group:
                if len(group) + len(batch) > room:
                    remaining = room - len(batch)
                    if large:
                        batch.extend(group[:remaining])
                        batch.append((END_TOKEN, 1.0))
                        group = group[remaining:]
                    else:
                        batch.append((END_TOKEN, 1.0))
                        batch.extend([(self.pad_token, 1.0)] * remaining)
                    batch = [(START_TOKEN, 1.0)]
                    chunks.append(batch)
                else:
                    batch.extend(group)
                    group = []
        batch.append((END_TOKEN, 1.0))
        batch.extend([(self.pad_token, 1.0)] * (self.max_length - len(batch)))
        return chunks


def split_embeddings(segment: str) -> list[str]:
    """A segment cut before each ' embedding:' / '\\nembedding:' (ComfyUI's rule)."""
    parts = std_re.split(" {0}|\n{0}".format(EMBEDDING_PREFIX), segment)
    words = [parts[0]] + [EMBEDDING_PREFIX + p for p in parts[1:]]
    return [w for w in words if w != ""]
