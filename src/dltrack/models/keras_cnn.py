"""The course's Keras CNN for Fashion-MNIST.

Architecture exactly as in the course: Conv2D(32, 3x3, relu, he_normal) -> MaxPooling2D(2x2)
-> Dropout(0.25) -> Conv2D(128, 3x3, relu) -> Dropout(0.4) -> Flatten -> Dense(128, relu)
-> Dropout(0.3) -> Dense(10, softmax); Adam; categorical cross-entropy; accuracy.

Two settings differ from the course, each one argument away:

- ``lr_schedule="cosine"``: Adam's rate decays from 1e-3 to 0 over the run
  (:mod:`dltrack.models.schedules`); ``"constant"`` is the course. Large steps late in training
  make the last epochs bounce around a minimum; decaying them is the standard fix.
- ``steps_per_execution=64``: Keras runs 64 optimizer steps per call of its compiled train
  function. The steps and their results are the same, with less Python overhead between
  them; 1 is the course (and Keras's default).
"""

from __future__ import annotations

import keras
from keras import layers

from dltrack.models.schedules import LRSchedule, check_lr_schedule

__all__ = ["build_course_cnn"]


def build_course_cnn(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    learning_rate: float = 1e-3,
    lr_schedule: LRSchedule = "cosine",
    total_steps: int | None = None,
    steps_per_execution: int = 64,
) -> keras.Model:
    """Build and compile the course CNN.

    Args:
        input_shape: one image, channels-last: (28, 28, 1) float32 in [0, 1].
        num_classes: width of the softmax output; labels must be one-hot, shape (n, classes).
        learning_rate: Adam's (initial) learning rate; 1e-3 is Keras's default and the course's.
        lr_schedule: "cosine" decays the rate to 0 over ``total_steps`` optimizer steps
            (epochs x batches per epoch); "constant" is the course's setting.
        total_steps: required for "cosine".
        steps_per_execution: optimizer steps per call of Keras's compiled train function
            (course: 1). Batch-level callbacks then run every that many steps.

    Returns:
        A compiled ``keras.Sequential``: input (batch, 28, 28, 1) float32, output (batch, 10)
        float32 class probabilities summing to 1.

    Raises:
        ValueError: unknown ``lr_schedule``, or "cosine" without a positive ``total_steps``.
    """
    check_lr_schedule(lr_schedule)
    if lr_schedule == "cosine":
        if not total_steps or total_steps < 1:
            raise ValueError("lr_schedule='cosine' needs total_steps = epochs * batches per epoch")
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    else:
        rate = learning_rate

    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, (3, 3), activation="relu", kernel_initializer="he_normal"),
            layers.MaxPooling2D((2, 2)),
            layers.Dropout(0.25),
            layers.Conv2D(128, (3, 3), activation="relu"),
            layers.Dropout(0.4),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="fashion_mnist_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model
