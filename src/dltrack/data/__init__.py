"""Data, offline and checksummed: Fashion-MNIST for the framework loaders, and the labelled
sentences of notebook 03. Every file is checked against its sha256 on each load
(:mod:`dltrack.data.checksums`); a missing or corrupted file raises :class:`DatasetError`."""

from dltrack.data.checksums import DatasetError, sha256_file, verify_file
from dltrack.data.fashion_mnist import (
    CLASS_NAMES,
    FILES,
    KNOWN_RELEASES,
    fashion_mnist_dir,
    prepare_keras_fashion_mnist,
    prepare_torchvision_fashion_mnist,
    verify_fashion_mnist,
)
from dltrack.data.sentences import load_sentences

__all__ = [
    "CLASS_NAMES",
    "FILES",
    "KNOWN_RELEASES",
    "DatasetError",
    "fashion_mnist_dir",
    "load_sentences",
    "prepare_keras_fashion_mnist",
    "prepare_torchvision_fashion_mnist",
    "sha256_file",
    "verify_fashion_mnist",
    "verify_file",
]
