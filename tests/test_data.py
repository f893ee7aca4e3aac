import gzip
import shutil

import numpy as np
import pytest

from dltrack import data
from dltrack.data import fashion_mnist

SHIPPED = "fashion-mnist-small (2,000 train / 500 test, shipped)"


def test_shipped_subset_verifies():
    assert data.verify_fashion_mnist() == SHIPPED


def test_env_var_selects_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DLTRACK_FASHION_MNIST_DIR", str(tmp_path))
    assert data.fashion_mnist_dir() == tmp_path.resolve()
    monkeypatch.delenv("DLTRACK_FASHION_MNIST_DIR")
    assert data.fashion_mnist_dir().name == "fashion-mnist-small"


def test_relative_dir_is_taken_from_project_not_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLTRACK_FASHION_MNIST_DIR", raising=False)
    assert data.verify_fashion_mnist("data/fashion-mnist-small") == SHIPPED


@pytest.fixture()
def copy_of_subset(tmp_path):
    folder = tmp_path / "fmnist"
    shutil.copytree(data.fashion_mnist_dir(), folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def test_missing_file_names_file_and_fix(copy_of_subset):
    (copy_of_subset / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        data.DatasetError, match=r"missing: .*t10k-labels-idx1-ubyte.gz.*git checkout"
    ):
        data.verify_fashion_mnist(copy_of_subset)


def test_corrupted_file_names_file(copy_of_subset):
    path = copy_of_subset / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(data.DatasetError, match=r"train-labels-idx1-ubyte.gz is corrupted"):
        data.verify_fashion_mnist(copy_of_subset)


def test_mixed_releases_rejected(monkeypatch):
    shipped = data.KNOWN_RELEASES[SHIPPED]
    fake = {
        "A": {**shipped, "t10k-labels-idx1-ubyte.gz": "0" * 64},
        "B": {**shipped, "train-images-idx3-ubyte.gz": "1" * 64},
    }
    monkeypatch.setattr(fashion_mnist, "KNOWN_RELEASES", fake)
    with pytest.raises(data.DatasetError, match="mix releases"):
        data.verify_fashion_mnist()


def test_keras_loader_reads_shipped_files_offline():
    keras = pytest.importorskip("keras")
    folder = data.prepare_keras_fashion_mnist()
    assert all((folder / name).is_file() for name in data.FILES)
    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    assert x_train.shape == (2000, 28, 28) and x_test.shape == (500, 28, 28)
    assert x_train.dtype == np.uint8
    # first labels of the release, per the data README
    assert y_train[:10].tolist() == [2, 9, 6, 0, 3, 4, 4, 5, 4, 8]
    assert y_test[:10].tolist() == [0, 1, 2, 2, 3, 2, 8, 6, 5, 0]
    assert np.bincount(y_train).tolist() == [200] * 10


def test_keras_cache_keeps_a_real_download(tmp_path, monkeypatch):
    pytest.importorskip("keras")
    folder = data.prepare_keras_fashion_mnist()
    target = folder / "train-labels-idx1-ubyte.gz"
    target.unlink()
    target.write_bytes(b"a real download")
    data.prepare_keras_fashion_mnist()
    assert target.is_symlink()
    assert (folder / "train-labels-idx1-ubyte.gz.orig").read_bytes() == b"a real download"


def test_torchvision_loader_reads_shipped_files_offline(tmp_path):
    datasets = pytest.importorskip("torchvision.datasets")
    transforms = pytest.importorskip("torchvision.transforms")
    root = data.prepare_torchvision_fashion_mnist(root=tmp_path / "tv")
    train = datasets.FashionMNIST(root, train=True, download=True, transform=transforms.ToTensor())
    test = datasets.FashionMNIST(root, train=False, download=True, transform=transforms.ToTensor())
    assert len(train) == 2000 and len(test) == 500
    image, label = train[0]
    assert tuple(image.shape) == (1, 28, 28) and label == 2
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_torchvision_files_follow_the_chosen_source(tmp_path, copy_of_subset):
    root = tmp_path / "tv"
    data.prepare_torchvision_fashion_mnist(root=root)
    raw = root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    with gzip.open(data.fashion_mnist_dir() / "train-labels-idx1-ubyte.gz") as f:
        assert raw.read_bytes() == f.read()
    raw.write_bytes(b"stale")
    data.prepare_torchvision_fashion_mnist(copy_of_subset, root=root)  # new source: re-made
    assert raw.read_bytes() != b"stale"


def test_class_names():
    assert len(data.CLASS_NAMES) == 10
    assert data.CLASS_NAMES[0] == "T-shirt/top" and data.CLASS_NAMES[9] == "Ankle boot"


def test_sha256_of_a_known_file(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_bytes(b"abc")
    assert data.sha256_file(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 example
    )
    assert data.verify_file(path, {data.sha256_file(path)}, "fix it") == data.sha256_file(path)
    with pytest.raises(data.DatasetError, match=r"abc.txt is corrupted .* fix it"):
        data.verify_file(path, "0" * 64, "fix it")


def test_sentences_are_balanced_and_checked():
    sentences = data.load_sentences()
    assert len(sentences) == 300
    assert sentences["label"].value_counts().to_dict() == {"POSITIVE": 150, "NEGATIVE": 150}
    assert set(sentences["source"]) == {"amazon", "imdb", "yelp"}
    assert list(sentences.columns) == ["source", "text", "label"]


def test_corrupted_sentences_are_refused(monkeypatch, tmp_path):
    from dltrack.data import sentences

    copy = tmp_path / "sentiment-sentences" / "sentences-300.csv"
    copy.parent.mkdir()
    copy.write_text("source,text,label\nx,y,POSITIVE\n")
    monkeypatch.setattr(sentences, "data_dir", lambda: tmp_path)
    with pytest.raises(data.DatasetError, match=r"sentences-300.csv is corrupted.*git checkout"):
        data.load_sentences()
    copy.unlink()
    with pytest.raises(data.DatasetError, match=r"missing: .*sentences-300.csv"):
        data.load_sentences()
