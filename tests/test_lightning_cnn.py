import mlflow
import numpy as np
import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

from torch import nn  # noqa: E402

from dltrack.models.lightning_cnn import (  # noqa: E402
    SIGNATURE,
    FashionMNISTCNN,
    FashionMNISTDataModule,
    mlflow_datasets,
)


def test_course_network_shapes_and_size():
    model = FashionMNISTCNN()
    logits = model(torch.zeros(4, 1, 28, 28))
    assert logits.shape == (4, 10) and logits.dtype == torch.float32
    # conv 320 + bn 64 + conv 18,496 + bn 128 + fc 1,383,000 + 72,120 + 1,210
    assert sum(p.numel() for p in model.parameters()) == 1_475_338
    assert model.fc1.in_features == 64 * 6 * 6
    assert isinstance(model.drop, nn.Dropout)


def test_course_settings_one_parameter_away():
    course = FashionMNISTCNN(learning_rate=0.02, dropout="dropout2d", lr_schedule="constant")
    assert isinstance(course.drop, nn.Dropout2d)
    assert course.configure_optimizers().param_groups[0]["lr"] == 0.02
    with pytest.raises(ValueError, match="dropout must be"):
        FashionMNISTCNN(dropout="none")
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        FashionMNISTCNN(lr_schedule="onecycle")


def test_channels_last_layout_changes_memory_not_values():
    fast = FashionMNISTCNN().eval()  # default: channels-last
    plain = FashionMNISTCNN(memory_format="contiguous").eval()
    plain.load_state_dict(fast.state_dict())
    assert fast.layer1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not fast.layer2[0].weight.is_contiguous()  # (64, 32, 3, 3) stored as N, H, W, C
    assert plain.layer2[0].weight.is_contiguous()
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = plain(images), fast(images)
    assert got.shape == (8, 10) and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="memory_format must be one of"):
        FashionMNISTCNN(memory_format="nhwc")


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    dm = FashionMNISTDataModule(root=tmp_path_factory.mktemp("tv"), seed=0)
    dm.prepare_data()
    dm.setup()
    return dm


def test_datamodule_split_and_batches(datamodule):
    from torchvision import datasets, transforms

    assert (len(datamodule.train_set), len(datamodule.val_set)) == (1833, 167)  # 11:1 of 2,000
    assert len(datamodule.test_set) == 500
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    # same values as the course's ToTensor() pipeline
    reference = datasets.FashionMNIST(datamodule.root, train=False, transform=transforms.ToTensor())
    assert torch.equal(datamodule.test_set.tensors[0][3], reference[3][0])
    assert int(datamodule.test_set.tensors[1][3]) == reference[3][1]


def test_the_three_parts_are_named_mlflow_datasets_of_the_split(datamodule):
    datasets = mlflow_datasets(datamodule)
    assert {context: d.name for context, d in datasets.items()} == {
        "training": "fashion-mnist-train", "validation": "fashion-mnist-validation",
        "test": "fashion-mnist-test",
    }  # fmt: skip
    for context, part in (("training", datamodule.train_set), ("validation", datamodule.val_set)):
        images, labels = part.dataset.tensors
        np.testing.assert_array_equal(datasets[context].features, images[part.indices].numpy())
        np.testing.assert_array_equal(datasets[context].targets, labels[part.indices].numpy())
    assert datasets["test"].features.shape == (500, 1, 28, 28)
    assert datasets["test"].features.dtype == np.float32
    assert all(d.source.url == "https://github.com/zalandoresearch/fashion-mnist"
               for d in datasets.values())  # fmt: skip
    assert len({d.digest for d in datasets.values()}) == 3
    other_split = FashionMNISTDataModule(root=datamodule.root, seed=1)
    other_split.setup()
    assert mlflow_datasets(other_split)["training"].digest != datasets["training"].digest
    with pytest.raises(RuntimeError, match=r"setup\('fit'\) first"):
        mlflow_datasets(FashionMNISTDataModule(root=datamodule.root))


def test_split_is_seeded(datamodule):
    again = FashionMNISTDataModule(root=datamodule.root, seed=0)
    again.setup()
    assert again.val_set.indices == datamodule.val_set.indices


def test_steps_log_loss_and_accuracy(datamodule):
    L.seed_everything(0)
    model = FashionMNISTCNN()
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=5, limit_val_batches=2, limit_test_batches=2,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    rates = []

    class RecordRate(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(RecordRate())
    trainer.fit(model, datamodule=datamodule)
    assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(trainer.callback_metrics)
    # cosine over 5 steps, stepped every batch: lr0 * (1 + cos(pi * t / 5)) / 2 for t = 0..4
    expected = [1e-3 * (1 + np.cos(np.pi * t / 5)) / 2 for t in range(5)]
    assert rates == pytest.approx(expected)
    # the cosine schedule has run down to 0 over the 5 steps
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    (result,) = trainer.test(model, datamodule=datamodule, verbose=False)
    assert set(result) == {"test_loss", "test_acc"} and 0.0 <= result["test_acc"] <= 1.0
    loader = torch.utils.data.DataLoader(datamodule.test_set.tensors[0][:8], batch_size=8)
    (logits,) = trainer.predict(model, loader)
    assert logits.shape == (8, 10)


def test_pt2_model_accepts_any_batch_size(experiment):
    experiment("test-pt2")
    torch.manual_seed(0)
    model = FashionMNISTCNN().eval()
    signature = SIGNATURE
    example = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            model,
            name="model-cnn",
            signature=signature,
            input_example=example,
            serialization_format="pt2",
        )
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    for n in (1, 64, 256):
        batch = np.random.default_rng(n).random((n, 1, 28, 28), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(loaded.predict(batch), expected, atol=1e-5)


def test_the_signature_is_what_the_network_takes_and_gives():
    """One constant, beside the model: its input is the network's input, its output the
    network's output, for any batch size."""
    (images,) = SIGNATURE.inputs.inputs
    (logits,) = SIGNATURE.outputs.inputs
    assert images.type == np.dtype(np.float32) and logits.type == np.dtype(np.float32)
    for n in (1, 3):
        batch = torch.zeros(n, *images.shape[1:])
        out = FashionMNISTCNN()(batch)
        assert images.shape[0] == -1 and tuple(out.shape) == (n, *logits.shape[1:])
    assert tuple(logits.shape) == (-1, 10)


@pytest.mark.timeout(120)
def test_importing_the_module_leaves_warnings_and_loggers_alone():
    """Silencing is a visible call: after the import alone, a fresh Python filters none of the
    known messages, and Lightning's loggers have no filter; the call adds them."""
    import subprocess
    import sys

    code = (
        "import logging, re, warnings\n"
        "from dltrack.models import lightning_cnn\n"
        "known = {re.escape(text) for text in lightning_cnn.KNOWN_NOISE.values()}\n"
        "def ours():\n"
        "    return [f for f in warnings.filters if f[1] is not None and f[1].pattern in known]\n"
        "assert ours() == [], 'the import alone filters warnings'\n"
        "names = ('lightning.pytorch.utilities.rank_zero', 'pytorch_lightning.utilities.rank_zero')\n"
        "assert not any(logging.getLogger(n).filters for n in names), 'a logger is filtered'\n"
        "lightning_cnn.silence_known_noise()\n"
        "assert len(ours()) == 2 and logging.getLogger(names[0]).filters\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=110
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_known_noise_is_silenced_by_its_exact_message_only(caplog):
    """silence_known_noise drops Lightning's tip and the two warnings, by their text; a
    neighbouring message of the same logger or category still shows."""
    import logging
    import warnings

    from dltrack.models import lightning_cnn

    lightning_cnn.silence_known_noise()
    lightning_cnn.silence_known_noise()  # again: idempotent
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info(lightning_cnn.KNOWN_NOISE["lightning_tip"] + " try installing [litlogger]")
        logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # as a notebook shows them ...
        lightning_cnn.silence_known_noise()  # ... after the module's filters
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use", FutureWarning, stacklevel=1
        )
        warnings.warn(lightning_cnn.KNOWN_NOISE["pt2_weights"], UserWarning, stacklevel=1)
        warnings.warn("another FutureWarning", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another FutureWarning"]


def test_dropout_rate_and_width_are_one_argument_away():
    """Notebook 06 tunes them; the defaults stay the course's (0.25, 600)."""
    narrow = FashionMNISTCNN(dropout_rate=0.1, hidden_units=150)
    assert narrow.drop.p == 0.1 and narrow.fc1.out_features == 150 and narrow.fc2.in_features == 150
    assert narrow(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert FashionMNISTCNN().drop.p == 0.25
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\)"):
        FashionMNISTCNN(dropout_rate=1.0)
    with pytest.raises(ValueError, match="hidden_units must be at least 1"):
        FashionMNISTCNN(hidden_units=0)
