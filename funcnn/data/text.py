r"""A character-level corpus from the Python standard library: `load_pydoc(seed=0) -> Corpus`.

The text is `pydoc_data.topics.topics` (the help pages of `help("if")` etc.), its values
joined in sorted key order: 464,970 characters over a 103-character vocabulary in CPython
3.11, present in every Python installation, nothing downloaded.

**Split.** A language model predicts a character from the ones before it, so the split
keeps text contiguous: the corpus is cut into blocks of `BLOCK = 4096` characters, and a
seeded 10% of the blocks (rounded) form the validation text; the others, in their original
order, the training text. Each side is the concatenation of its blocks, so a window can
span the join of two blocks that were not neighbours (about a dozen joins in 420,000
characters). The vocabulary is the sorted set of characters of the whole corpus, so every
validation character has an id.

**Windows.** A training batch is $B$ windows at uniformly drawn offsets $o$:
$x = \text{ids}[o : o + T]$, $y = \text{ids}[o + 1 : o + T + 1]$ (the next character at every
position). Validation uses the non-overlapping windows at offsets $0, T, 2T, \dots$ (all of
them, or the first `max_windows`), so its loss is a fixed number.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

BLOCK = 4096
VALIDATION_FRACTION = 0.1


class Corpus(NamedTuple):
    """A character-level corpus: `train` and `validation` int32 ids (1-D), `vocab` (the
    character with id `i` is `vocab[i]`) and its `name`."""

    train: np.ndarray        # int32 ids of the training text
    validation: np.ndarray   # int32 ids of the validation text
    vocab: str               # vocab[i] is the character with id i
    name: str

    @property
    def vocab_size(self) -> int:
        """The number of distinct characters, `len(vocab)`."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """The character ids of `text`, int32 of shape `(len(text),)`; `ValueError` names the first unknown character."""
        index = {c: i for i, c in enumerate(self.vocab)}
        unknown = [c for c in text if c not in index]
        if unknown:
            raise ValueError(f"{self.name}.encode: character {unknown[0]!r} is not in the vocabulary")
        return np.array([index[c] for c in text], dtype=np.int32)

    def decode(self, ids: np.ndarray) -> str:
        """The text of the character ids `ids` (any shape, read in order)."""
        return "".join(self.vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def pydoc_text() -> str:
    """The whole corpus: the values of `pydoc_data.topics.topics` joined in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


def load_pydoc(seed: int = 0) -> Corpus:
    """The pydoc corpus, split into training and validation blocks by `seed` (module docstring).

    **Returns:**

    A `Corpus`: `train` and `validation` int32 ids, shapes `(N_train,)` and `(N_val,)`, the
    `vocab` string and `name="pydoc"`.
    """
    text = pydoc_text()
    vocab = "".join(sorted(set(text)))
    ids = Corpus(np.zeros(0, np.int32), np.zeros(0, np.int32), vocab, "pydoc").encode(text)
    blocks = [ids[i:i + BLOCK] for i in range(0, len(ids), BLOCK)]
    n_val = max(1, round(VALIDATION_FRACTION * len(blocks)))
    val = set(np.random.default_rng(seed).choice(len(blocks), n_val, replace=False).tolist())
    train = np.concatenate([b for i, b in enumerate(blocks) if i not in val])
    validation = np.concatenate([b for i, b in enumerate(blocks) if i in val])
    return Corpus(train, validation, vocab, "pydoc")


def _check_context(ids, context, where):
    if isinstance(context, bool) or not isinstance(context, int) or context <= 0:
        raise ValueError(f"{where}: context must be a positive integer, got {context!r}")
    if len(ids) < context + 1:
        raise ValueError(f"{where}: context must be below the text length {len(ids)}, got {context}")


def random_windows(ids: np.ndarray, context: int, batch_size: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training windows at uniform offsets and their next-character targets.

    **Arguments:**

    - `ids`: the text's ids, shape `(L,)`; `context`: $T$, below `L`.
    - `batch_size`: $B$; `rng`: the NumPy generator that draws the offsets.

    **Returns:**

    `(x, y)`, int32 arrays of shape `(B, T)`, `y` shifted by one character.
    """
    _check_context(ids, context, "random_windows")
    offsets = rng.integers(0, len(ids) - context, batch_size)
    rows = offsets[:, None] + np.arange(context)
    return ids[rows], ids[rows + 1]


def eval_windows(ids: np.ndarray, context: int, max_windows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    r"""The non-overlapping windows at offsets $0, T, 2T, \dots$ and their next-character targets.

    **Arguments:**

    - `ids`: the text's ids, shape `(L,)`; `context`: $T$, below `L`.
    - `max_windows`: keep at most this many windows (None: all).

    **Returns:**

    `(x, y)`, int32 arrays of shape `(W, T)`.
    """
    _check_context(ids, context, "eval_windows")
    n = (len(ids) - 1) // context
    if max_windows is not None:
        n = min(n, max_windows)
    rows = np.arange(n)[:, None] * context + np.arange(context)
    return ids[rows], ids[rows + 1]
