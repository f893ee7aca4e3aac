import matplotlib
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from dltrack import evaluation

matplotlib.use("Agg")


def test_image_grid_layouts():
    for shape in [(5, 28, 28), (5, 28, 28, 1), (5, 1, 28, 28)]:
        fig = evaluation.image_grid(np.zeros(shape), [str(i) for i in range(5)], columns=4)
        assert len(fig.axes) == 8
        assert [ax.get_title() for ax in fig.axes[:5]] == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match="grayscale"):
        evaluation.image_grid(np.zeros((2, 3, 28, 28)))


def test_misclassified_figure_shows_only_the_wrong_predictions():
    y_true = np.array([0, 1, 2, 3, 4])
    y_pred = np.array([0, 2, 2, 1, 4])
    images = np.arange(5)[:, None, None] * np.ones((5, 28, 28))  # image i is filled with i
    fig = evaluation.misclassified_figure(images, y_true, y_pred, list("abcde"), max_images=16)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["c\n(actual b)", "b\n(actual d)"]
    assert [float(ax.images[0].get_array().mean()) for ax in shown] == [1.0, 3.0]
    assert fig._suptitle.get_text() == "2 of 2 misclassified test images"
    with pytest.raises(ValueError, match="differ in length"):
        evaluation.misclassified_figure(images, y_true[:4], y_pred, list("abcde"))


def test_training_curves_from_a_runs_metric_history(experiment):
    experiment("exp-curves")
    with mlflow.start_run() as run:
        for epoch, (loss, val_loss) in enumerate([(1.0, 1.2), (0.6, 0.9), (0.4, 0.8)]):
            mlflow.log_metrics({"train_loss": loss, "val_loss": val_loss}, step=epoch)
        mlflow.log_metric("val_acc", 0.5, step=0)
    client = MlflowClient()
    history = {
        k: client.get_metric_history(run.info.run_id, k)
        for k in ("train_loss", "val_loss", "val_acc")
    }
    fig = evaluation.plot_training_curves(history)
    loss_panel, acc_panel = fig.axes
    assert loss_panel.get_title() == "loss" and acc_panel.get_title() == "acc"
    lines = {line.get_label(): line for line in loss_panel.get_lines()}
    assert list(lines["train_loss"].get_xdata()) == [0, 1, 2]
    assert list(lines["val_loss"].get_ydata()) == [1.2, 0.9, 0.8]
    assert loss_panel.get_xlabel() == "epoch"


def test_training_curves_refuse_a_metric_that_was_never_logged(experiment):
    experiment("exp-curves-empty")
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 1.0)
    client = MlflowClient()
    history = {k: client.get_metric_history(run.info.run_id, k) for k in ("loss", "accuracy")}
    with pytest.raises(ValueError, match=r"no metric values logged for \['accuracy'\]"):
        evaluation.plot_training_curves(history)


@pytest.mark.parametrize("short", ["titles", "colors"])
def test_image_grid_names_a_short_list_of_titles_or_colors(short):
    values = {"titles": ["a"] * 5, "colors": ["green"] * 5}
    values[short] = values[short][:3]
    with pytest.raises(ValueError, match=f"expected one of {short} per image: 3 for 5 images"):
        evaluation.image_grid(np.zeros((5, 28, 28)), **values)
