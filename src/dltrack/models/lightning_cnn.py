"""The course's PyTorch Lightning CNN for Fashion-MNIST, with its data module.

Network, as in the course: Conv2d(1->32, 3x3, padding 1) + BatchNorm2d + ReLU + MaxPool2d(2, 2);
Conv2d(32->64, 3x3) + BatchNorm2d + ReLU + MaxPool2d(2); Linear(64*6*6 -> 600) -> dropout 0.25
-> Linear(600 -> 120) -> Linear(120 -> 10). Input (batch, 1, 28, 28) float32 in [0, 1]
(channels-first, PyTorch's layout); output (batch, 10) float32 logits.

Two course defects are fixed, each one parameter away:

- ``dropout="dropout"``: the course used ``nn.Dropout2d`` on the 2-D output of a Linear layer;
  Dropout2d zeroes whole channels of (N, C, H, W) maps, PyTorch warns that 2-D input will become
  an error, and on (N, features) it is not channel dropout at all. ``nn.Dropout`` is meant.
  ``dropout="dropout2d"`` restores the course.
- ``learning_rate=1e-3``: the course used Adam with 0.02, twenty times Adam's usual rate, and got
  84.9 % test accuracy. ``COURSE_LEARNING_RATE`` restores it.

Beyond the course, each one argument away:

- ``lr_schedule="cosine"`` decays the rate to 0 along a cosine over the run, as notebook 01
  does (:mod:`dltrack.models.schedules`); ``"constant"`` is the course.
- ``dropout_rate`` (course: 0.25) and ``hidden_units``, the width of the first Linear layer
  (course: 600): the knobs notebook 06 tunes (:mod:`dltrack.sweeps`).
- ``memory_format="channels_last"``: the convolution weights, and so their outputs, are kept in
  PyTorch's channels-last layout (N, H, W, C in memory, the same (N, C, H, W) shape; PyTorch's
  "Channels Last Memory Format" tutorial), which oneDNN's CPU convolutions run faster. Values,
  shapes and the input contract do not change; ``"contiguous"`` is PyTorch's default layout.

Data: torchvision's ``FashionMNIST`` (fed offline by :mod:`dltrack.data`), a seeded random
55,000/5,000 train/validation split (the same 11:1 proportion for subsets), batches of 64.
For speed the training loaders read torchvision's already-decoded uint8 tensors
(``dataset.data``) and scale them once, instead of converting every image through PIL with
``ToTensor()`` at every epoch; the values are the same as ``ToTensor()`` gives (x / 255).

Importing this module changes no global state. :func:`silence_known_noise`, called where a
program wants it (notebook 02 calls it in its imports cell), silences three messages a learner
cannot act on, each by its exact text: Lightning's advertising tip for its own cloud logger, the
``FutureWarning`` that Lightning's own code triggers by building PyTorch's deprecated
``LeafSpec``, and PyTorch's "No complete tensor found in the group" warning while
``mlflow.pytorch.log_model`` saves the weights in ``pt2`` (they are on the CPU, as it asks).

:data:`SIGNATURE` is the network's served contract, the one signature every logged copy of it
carries (notebooks 02 and 06, the DDP script).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import Literal

import lightning as L
import mlflow.data
import numpy as np
import torch
import torch.nn.functional as F
from mlflow.data.numpy_dataset import NumpyDataset
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split
from torchmetrics.classification import MulticlassAccuracy

from dltrack.data import prepare_torchvision_fashion_mnist
from dltrack.models.schedules import LRSchedule, check_lr_schedule

__all__ = [
    "COURSE_LEARNING_RATE",
    "DATA_SOURCE",
    "KNOWN_NOISE",
    "SIGNATURE",
    "FashionMNISTDataModule",
    "FashionMNISTCNN",
    "mlflow_datasets",
    "silence_known_noise",
]

#: The exact starts of the messages :func:`silence_known_noise` drops, by where they come from.
KNOWN_NOISE = {
    "lightning_tip": "💡 Tip: For seamless cloud logging and experiment tracking",
    "leafspec": "`isinstance(treespec, LeafSpec)` is deprecated",
    "pt2_weights": "No complete tensor found in the group! Returning the first one.",
}
#: Lightning logs its start-up lines through one of these loggers: whichever of the packages
#: (``lightning``, or the ``pytorch_lightning`` that ``mlflow.pytorch.autolog`` imports) was
#: imported last.
_RANK_ZERO_LOGGERS = tuple(
    f"{package}.utilities.rank_zero"
    for package in (
        "lightning.pytorch",
        "lightning.fabric",
        "pytorch_lightning",
        "lightning_fabric",
    )
)


class _DropMessage(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def silence_known_noise() -> None:
    """Drop :data:`KNOWN_NOISE`, and only it, from the notebook's output: a logging filter on
    Lightning's rank-zero loggers for the tip, and ``warnings`` filters matching the exact
    message and category of the two warnings. Safe to call again (filters are not stacked)."""
    tip = KNOWN_NOISE["lightning_tip"]
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.start == tip for f in logger.filters):
            logger.addFilter(_DropMessage(tip))
    warnings.filterwarnings(
        "ignore", message=re.escape(KNOWN_NOISE["leafspec"]), category=FutureWarning
    )
    warnings.filterwarnings(
        "ignore", message=re.escape(KNOWN_NOISE["pt2_weights"]), category=UserWarning
    )


COURSE_LEARNING_RATE = 0.02
#: Where Fashion-MNIST comes from (Zalando's release), the ``source`` of its MLflow datasets; the
#: shipped subset is drawn from it, and a run's ``data`` parameter names the files used.
DATA_SOURCE = "https://github.com/zalandoresearch/fashion-mnist"

#: What :class:`FashionMNISTCNN` takes and gives, as MLflow records it with a logged model:
#: (n, 1, 28, 28) float32 images in [0, 1], channels first, in; (n, 10) float32 logits out; -1
#: is any batch size. A server refuses a request of another shape or dtype with a 400.
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
)
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


class FashionMNISTCNN(L.LightningModule):
    """The course CNN as a LightningModule; logs train/val/test loss and accuracy per epoch.

    Args:
        learning_rate: Adam's learning rate (course: 0.02, see module docstring).
        dropout: "dropout" (``nn.Dropout``) or "dropout2d" (the course's ``nn.Dropout2d``).
        num_classes: output width.
        lr_schedule: "cosine" (default) or "constant" (the course); see
            :mod:`dltrack.models.schedules`.
        memory_format: "channels_last" (default, faster convolutions on CPU) or "contiguous"
            (PyTorch's default layout); see the module docstring.
        dropout_rate: the probability the dropout layer zeroes a unit, in [0, 1) (course: 0.25).
        hidden_units: outputs of the first Linear layer (course: 600), at least 1.

    Raises:
        ValueError: unknown ``dropout``, ``lr_schedule`` or ``memory_format``; ``dropout_rate``
            outside [0, 1); ``hidden_units`` below 1.
    """

    def __init__(
        self,
        learning_rate: float = 1e-3,
        dropout: Literal["dropout", "dropout2d"] = "dropout",
        num_classes: int = 10,
        lr_schedule: LRSchedule = "cosine",
        memory_format: Literal["channels_last", "contiguous"] = "channels_last",
        dropout_rate: float = 0.25,
        hidden_units: int = 600,
    ) -> None:
        super().__init__()
        if dropout not in ("dropout", "dropout2d"):
            raise ValueError(f"dropout must be 'dropout' or 'dropout2d', got {dropout!r}")
        check_lr_schedule(lr_schedule)
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"memory_format must be one of {tuple(MEMORY_FORMATS)}, got {memory_format!r}"
            )
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
        if hidden_units < 1:
            raise ValueError(f"hidden_units must be at least 1, got {hidden_units!r}")
        self.save_hyperparameters()
        self.layer1 = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.layer2 = nn.Sequential(
            nn.Conv2d(32, 64, kernel_size=3),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(64 * 6 * 6, hidden_units)
        drop = nn.Dropout if dropout == "dropout" else nn.Dropout2d
        self.drop = drop(dropout_rate)
        self.fc2 = nn.Linear(hidden_units, 120)
        self.fc3 = nn.Linear(120, num_classes)
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self._memory_format = MEMORY_FORMATS[memory_format]
        # the conv weights; the conv outputs follow (a 1-channel input is the same either way)
        self.to(memory_format=self._memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 1, 28, 28) float32 -> (batch, 10) logits."""
        out = self.layer2(self.layer1(x.contiguous(memory_format=self._memory_format)))
        out = out.flatten(1)
        return self.fc3(self.fc2(self.drop(self.fc1(out))))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        accuracy = getattr(self, f"{stage}_acc")
        accuracy(logits, labels)
        # per-epoch values only: logging every step costs a metric write per batch
        # sync_dist: under DDP the epoch loss is averaged over every process, not rank 0's share
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "train",
                 sync_dist=True)
        self.log(f"{stage}_acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):  # noqa: D102
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):  # noqa: D102
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx=0) -> torch.Tensor:
        """Logits (batch, 10) for a batch of images (labels, if present, are ignored)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images)

    def configure_optimizers(self):
        """Adam; with "cosine" its rate decays to 0 along a cosine over all training steps
        (``CosineAnnealingLR``, stepped every batch), with "constant" it stays at
        ``learning_rate`` (the course)."""
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)
        if self.hparams.lr_schedule == "constant":
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def _as_tensors(dataset) -> TensorDataset:
    """(n, 1, 28, 28) float32 in [0, 1] and (n,) int64 labels from a torchvision FashionMNIST."""
    images = dataset.data.unsqueeze(1).float().div_(255.0)
    return TensorDataset(images, dataset.targets.long())


class FashionMNISTDataModule(L.LightningDataModule):
    """Fashion-MNIST for Lightning: offline files, seeded 11:1 train/validation split.

    Args:
        data_dir: folder of the four IDX ``.gz`` files ("" = shipped subset; see
            :func:`dltrack.data.fashion_mnist_dir`).
        batch_size: images per batch (course: 64).
        seed: seed of the train/validation split.
        num_workers: DataLoader worker processes. 0 is fastest here: the data is in memory.
        root: torchvision ``root`` (default ``data/.cache/torchvision``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        seed: int = 42,
        num_workers: int = 0,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.root = root

    def prepare_data(self) -> None:
        """Place the files where torchvision looks (no download)."""
        self.root = prepare_torchvision_fashion_mnist(self.data_dir, root=self.root)

    def setup(self, stage: str | None = None) -> None:
        """Load train/test with torchvision and split train 11:1 (55,000/5,000 on the full set)."""
        from torchvision import datasets

        if self.root is None:
            self.prepare_data()
        full = _as_tensors(datasets.FashionMNIST(self.root, train=True, download=True))
        n_val = round(len(full) / 12)
        generator = torch.Generator().manual_seed(self.seed)
        self.train_set, self.val_set = random_split(full, [len(full) - n_val, n_val], generator)
        self.test_set = _as_tensors(datasets.FashionMNIST(self.root, train=False, download=True))

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.test_set, shuffle=False)


def mlflow_datasets(datamodule: FashionMNISTDataModule) -> dict[str, NumpyDataset]:
    """The data module's three parts as MLflow datasets, keyed by the ``context`` a run logs them
    with: ``"training"`` (``fashion-mnist-train``), ``"validation"`` (``fashion-mnist-validation``)
    and ``"test"`` (``fashion-mnist-test``), each ``mlflow.data.from_numpy`` of the (n, 1, 28, 28)
    float32 images in [0, 1] with their (n,) int64 labels as targets, source :data:`DATA_SOURCE`.
    Notebook 02 builds its training and validation datasets the same way, in a cell of its own;
    its test dataset is another one of the same name (the labels with a model's predictions,
    which ``mlflow.models.evaluate`` scores), so it has another digest.

    Raises:
        RuntimeError: ``datamodule.setup`` has not run (there is no split yet).
    """
    if not hasattr(datamodule, "train_set"):
        raise RuntimeError("call datamodule.setup('fit') first: the split is made there")
    images, labels = datamodule.train_set.dataset.tensors  # before the split
    parts = {
        "training": ("train", images[datamodule.train_set.indices],
                     labels[datamodule.train_set.indices]),
        "validation": ("validation", images[datamodule.val_set.indices],
                       labels[datamodule.val_set.indices]),
        "test": ("test", *datamodule.test_set.tensors),
    }  # fmt: skip
    return {
        context: mlflow.data.from_numpy(x.numpy(), targets=y.numpy(), source=DATA_SOURCE,
                                        name=f"fashion-mnist-{name}")  # fmt: skip
        for context, (name, x, y) in parts.items()
    }
