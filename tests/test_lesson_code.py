"""The networks' code that notebooks 01 and 02 show is the code that runs: each display cell's
output, in the executed notebook, equals the source of the object in ``dltrack.models`` that the
notebook then builds and trains, and together they cover the parts the course walks through."""

from __future__ import annotations

import inspect

import nbformat
import pytest

pytestmark = pytest.mark.notebook


def displayed_code(executed) -> list[str]:
    """The text of every ``Code(inspect.getsource(...))`` output, in notebook order, without the
    final newline (a stored output drops it)."""
    notebook = nbformat.read(executed, as_version=4)
    return [
        output["data"]["text/plain"].rstrip("\n")
        for cell in notebook.cells
        if cell.cell_type == "code"
        and "Code(" in cell.source
        and "inspect.getsource(" in cell.source
        for output in cell.outputs
        if output.get("output_type") == "execute_result"
    ]


def test_notebook_01_shows_the_keras_cnn_that_it_trains(notebooks):
    from dltrack.models import keras_cnn

    (shown,) = displayed_code(notebooks.second("01_tensorflow_fashion_mnist.ipynb"))
    assert shown == inspect.getsource(keras_cnn.build_course_cnn).rstrip("\n")
    for part in ("layers.Conv2D(32", "layers.MaxPooling2D(", "layers.Dropout(", "layers.Flatten()",
                 'layers.Dense(num_classes, activation="softmax")', "model.compile("):  # fmt: skip
        assert part in shown


def test_notebook_02_shows_the_lightning_module_and_data_module_that_it_trains(notebooks):
    from dltrack import tracking
    from dltrack.models.lightning_cnn import FashionMNISTCNN, FashionMNISTDataModule

    shown = displayed_code(notebooks.second("02_pytorch_lightning_fashion_mnist.ipynb"))
    steps = ("_step", "training_step", "validation_step", "test_step")
    expected = [
        inspect.getsource(FashionMNISTCNN.__init__),
        inspect.getsource(FashionMNISTCNN.forward),
        "\n".join(inspect.getsource(getattr(FashionMNISTCNN, name)) for name in steps),
        inspect.getsource(FashionMNISTCNN.configure_optimizers),
        inspect.getsource(FashionMNISTDataModule),
        inspect.getsource(tracking.promote),
    ]
    assert shown == [source.rstrip("\n") for source in expected]
    code = "\n".join(shown)
    for part in ("nn.Conv2d(1, 32", "MulticlassAccuracy(", "def forward(", "def training_step(",
                 "def validation_step(", "def test_step(", "F.cross_entropy(", "self.log(",
                 "torch.optim.Adam(", "def setup(", "def train_dataloader("):  # fmt: skip
        assert part in code
