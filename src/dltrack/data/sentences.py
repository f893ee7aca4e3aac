"""The labelled sentences notebook 03 evaluates the sentiment model on (shipped, checksummed)."""

from __future__ import annotations

import pandas as pd

from dltrack.config import data_dir
from dltrack.data.checksums import verify_file

__all__ = ["SENTENCES_FILE", "SENTENCES_SHA256", "load_sentences"]

SENTENCES_FILE = "sentiment-sentences/sentences-300.csv"
#: From ``data/sentiment-sentences/README.md``.
SENTENCES_SHA256 = "949bafd1dd88fff0b8eb6f2ccc2c7a7757ee2d5df1c0ba41902eaffa80576d94"


def load_sentences() -> pd.DataFrame:
    """The shipped labelled sentences: 300 rows, columns ``source`` (amazon, imdb, yelp),
    ``text`` (str) and ``label`` (POSITIVE/NEGATIVE, 150 each); UCI Sentiment Labelled
    Sentences, CC BY 4.0 (see its README).

    Raises:
        dltrack.data.DatasetError: the file is missing or its sha256 differs; the message names
            the file and how to restore it.
    """
    path = data_dir() / SENTENCES_FILE
    verify_file(
        path, SENTENCES_SHA256, "Restore it with `git checkout -- data/sentiment-sentences`."
    )
    return pd.read_csv(path)
