"""Fashion-MNIST, offline: checksummed files fed to the frameworks' own loaders.

The course calls ``keras.datasets.fashion_mnist.load_data()`` and
``torchvision.datasets.FashionMNIST(root, download=True)``. Both download from the web, which
fails on an offline machine. dltrack keeps those calls and places the files where each loader
looks first, so the loaders find them and never download:

- Keras reads ``<KERAS_HOME or ~/.keras>/datasets/fashion-mnist/*.gz`` (it checks no hash).
- torchvision reads ``<root>/FashionMNIST/raw/<name>`` (uncompressed IDX) and skips its
  download when all four are there.

Which files: the 2,500-image subset shipped in ``data/fashion-mnist-small/`` by default; the
full 70,000-image set when a folder is given (``data_dir=`` or ``DLTRACK_FASHION_MNIST_DIR``).
Every file's sha256 is checked against the releases listed in :data:`KNOWN_RELEASES`.

Class names and label order follow the Fashion-MNIST README (Xiao, Rasul, Vollgraf 2017).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from dltrack.config import cache_dir, data_dir
from dltrack.data.checksums import DatasetError, verify_file

__all__ = [
    "CLASS_NAMES",
    "FILES",
    "KNOWN_RELEASES",
    "fashion_mnist_dir",
    "prepare_keras_fashion_mnist",
    "prepare_torchvision_fashion_mnist",
    "verify_fashion_mnist",
]

#: Label i is ``CLASS_NAMES[i]`` (Fashion-MNIST README, github.com/zalandoresearch/fashion-mnist).
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: The four IDX gzip files, in the names every loader uses.
FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: sha256 of each ``.gz`` file, per release. The first two come from the READMEs in
#: ``data/fashion-mnist-small/`` and ``../shared/data/fashion-mnist/``; the last is the current
#: official release as downloaded by Keras (the hashes Keras-era loaders pin).
KNOWN_RELEASES: dict[str, dict[str, str]] = {
    "fashion-mnist-small (2,000 train / 500 test, shipped)": {
        "train-images-idx3-ubyte.gz": "8137f39079f7f9daab1d813d33acc58dbb5380d1c1d5621e0b1e389f76a089a8",
        "train-labels-idx1-ubyte.gz": "46809eed614fc826c78b698f933404dc8e5dba85ad92aae5c31657c24bd2d2bf",
        "t10k-images-idx3-ubyte.gz": "669d1b3abeb3901e88be93267ca199918c8ec7905889637f4e2205e3b0f8b967",
        "t10k-labels-idx1-ubyte.gz": "d269dab962b08199527ab25132f2ce9d584bde954c53edc38305d892ae050616",
    },
    "fashion-mnist 2017-08-26 release (60,000 train / 10,000 test)": {
        "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
        "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
        "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
        "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
    },
    "fashion-mnist current release (60,000 train / 10,000 test)": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

ENV_VAR = "DLTRACK_FASHION_MNIST_DIR"
OFFICIAL_SOURCE = "https://github.com/zalandoresearch/fashion-mnist#get-the-data"


def fashion_mnist_dir(data_dir_: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder holding the four Fashion-MNIST IDX files to use.

    Order: the argument; the ``DLTRACK_FASHION_MNIST_DIR`` environment variable; the subset
    shipped in ``<project>/data/fashion-mnist-small``. Relative paths are taken from the project
    folder, not from the current directory (notebooks run in ``notebooks/``).
    """
    chosen = data_dir_ if data_dir_ not in (None, "") else os.environ.get(ENV_VAR) or None
    if chosen is None:
        return data_dir() / "fashion-mnist-small"
    path = Path(chosen).expanduser()
    if not path.is_absolute():
        path = data_dir().parent / path
    return path.resolve()


def verify_fashion_mnist(data_dir_: str | os.PathLike[str] | None = None) -> str:
    """Check the four IDX files against :data:`KNOWN_RELEASES` and return the release's name.

    All four files must belong to the same release.

    Raises:
        DatasetError: a file is missing, or its sha256 matches no known release, or the files
            mix releases. The message names the file and says how to fix it.
    """
    folder = fashion_mnist_dir(data_dir_)
    how_to_fix = (
        f"Restore the shipped subset with `git checkout -- data/fashion-mnist-small`, or point "
        f"{ENV_VAR} (or data_dir=) at a folder with the four files {', '.join(FILES)} "
        f"(full set: {OFFICIAL_SOURCE})."
    )
    candidates: set[str] | None = None
    for name in FILES:
        digest = verify_file(
            folder / name, {files[name] for files in KNOWN_RELEASES.values()}, how_to_fix
        )
        matches = {rel for rel, files in KNOWN_RELEASES.items() if files[name] == digest}
        candidates = matches if candidates is None else candidates & matches
    if not candidates:
        raise DatasetError(
            f"The files in {folder} mix releases; use the four files of one release. {how_to_fix}"
        )
    return sorted(candidates)[0]


def _keras_home() -> Path:
    """Keras's cache folder, by Keras's own rule (``KERAS_HOME``, else ``~/.keras``, else /tmp)."""
    if "keras" in sys.modules:  # Keras reads KERAS_HOME once, at import
        try:
            from keras.src.backend.config import keras_home

            base = Path(os.path.expanduser(keras_home()))
        except ImportError:  # pragma: no cover - layout of another Keras version
            base = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
    else:
        base = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
    try:
        base.mkdir(parents=True, exist_ok=True)
        writable = os.access(base, os.W_OK)
    except OSError:
        writable = False
    return base if writable else Path("/tmp/.keras")  # the same fallback as keras.utils.get_file


def _link(source: Path, target: Path) -> None:
    """Make ``target`` a symlink to ``source`` (a copy where symlinks are not allowed).

    A regular file already at ``target`` (a real download) is kept as ``<name>.orig``.
    """
    if target.is_symlink():
        if target.resolve() == source.resolve():
            return
        target.unlink()
    elif target.exists():
        target.replace(target.with_name(target.name + ".orig"))
    try:
        target.symlink_to(source)
    except OSError:  # pragma: no cover - e.g. Windows without developer mode
        shutil.copyfile(source, target)


def prepare_keras_fashion_mnist(data_dir_: str | os.PathLike[str] | None = None) -> Path:
    """Place the chosen Fashion-MNIST files where ``keras.datasets.fashion_mnist.load_data()``
    looks, so that call returns them without a network.

    Keras's loader calls ``keras.utils.get_file(name, cache_subdir="datasets/fashion-mnist")``,
    which returns a file already in the cache and checks no hash. The files are verified
    (:func:`verify_fashion_mnist`) and linked into that cache folder. A real Keras download found
    there is kept as ``<name>.orig``.

    Returns:
        The Keras cache folder now holding the four files.

    Raises:
        DatasetError: see :func:`verify_fashion_mnist`.
    """
    source = fashion_mnist_dir(data_dir_)
    verify_fashion_mnist(source)
    target = _keras_home() / "datasets" / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        _link(source / name, target / name)
    return target


#: Seconds a process waits for another that prepares the same torchvision folder.
PREPARE_LOCK_TIMEOUT = 300


def _release_folder(release: str) -> str:
    """A folder name for a release, e.g. ``fashion-mnist-small-2-000-train-500-test-shipped``."""
    return re.sub(r"[^a-z0-9]+", "-", release.lower()).strip("-")


def _write_atomically(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``target`` through a temporary file in its folder, then ``os.replace`` it into
    place: a reader sees the old file or the whole new one, never a part."""
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def prepare_torchvision_fashion_mnist(
    data_dir_: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """Place the chosen files where ``torchvision.datasets.FashionMNIST(root, download=True)``
    looks, so it finds them and never downloads.

    torchvision skips its download when ``<root>/FashionMNIST/raw/`` holds the four
    uncompressed IDX files; they are decompressed there (about 55 MB for the full set, 2 MB for
    the subset) and re-made when the chosen source changes (tracked in ``source.json``).

    Several processes may prepare at once (DDP ranks, sweep workers, a notebook beside them):
    one at a time holds the folder's lock (``filelock``, ``raw/.prepare.lock``), and each file is
    written to a temporary name and renamed into place, so a reader never sees a part of one.
    The default ``root`` is one folder per release, so a subset notebook beside a full-data
    sweep never rewrites the other's files; two sources of other releases given the same
    ``root`` take turns in it.

    Args:
        data_dir_: folder with the four ``.gz`` files; see :func:`fashion_mnist_dir`.
        root: the ``root`` to give torchvision; default
            ``<project>/data/.cache/torchvision/<release>``.

    Returns:
        ``root``, to pass to ``torchvision.datasets.FashionMNIST``.

    Raises:
        DatasetError: see :func:`verify_fashion_mnist`; or another process held the folder's
            lock for :data:`PREPARE_LOCK_TIMEOUT` seconds.
    """
    from filelock import FileLock, Timeout

    source = fashion_mnist_dir(data_dir_)
    release = verify_fashion_mnist(source)
    if root is not None:
        root_path = Path(root)
    else:
        root_path = cache_dir() / "torchvision" / _release_folder(release)
    raw = root_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    stamp = raw / "source.json"
    wanted = {"source": str(source), "release": release}
    lock = FileLock(str(raw / ".prepare.lock"), timeout=PREPARE_LOCK_TIMEOUT)
    try:
        with lock:
            have_all = all((raw / name.removesuffix(".gz")).is_file() for name in FILES)
            if have_all and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
                return root_path
            stamp.unlink(missing_ok=True)  # the files are about to change
            for name in FILES:
                with gzip.open(source / name, "rb") as src:
                    _write_atomically(
                        raw / name.removesuffix(".gz"), lambda dst: shutil.copyfileobj(src, dst)
                    )
            _write_atomically(stamp, lambda dst: dst.write(json.dumps(wanted).encode()))
    except Timeout:
        raise DatasetError(
            f"Another process has held {lock.lock_file} for {PREPARE_LOCK_TIMEOUT} s while "
            "preparing the same folder (a process that died holds no lock); wait for it to "
            "finish, or give this process another root."
        ) from None
    return root_path
