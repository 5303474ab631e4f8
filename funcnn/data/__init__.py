"""Data that need no download: `load(name, seed=0) -> Dataset` and the pydoc text corpus."""
from funcnn.data import text as text
from funcnn.data.datasets import LOADERS as LOADERS
from funcnn.data.datasets import Dataset as Dataset
from funcnn.data.datasets import load as load
from funcnn.data.text import Corpus as Corpus
from funcnn.data.text import load_pydoc as load_pydoc

__all__ = ["LOADERS", "Corpus", "Dataset", "load", "load_pydoc", "text"]
