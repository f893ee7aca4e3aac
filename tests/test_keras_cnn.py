import numpy as np
import pytest

keras = pytest.importorskip("keras")

from dltrack.models.keras_cnn import build_course_cnn  # noqa: E402 (after importorskip)


def test_course_cnn_layers_and_output():
    model = build_course_cnn(total_steps=10)
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D", "MaxPooling2D", "Dropout", "Conv2D", "Dropout",
        "Flatten", "Dense", "Dropout", "Dense",
    ]  # fmt: skip
    conv1, _, drop1, conv2, drop2, _, dense1, drop3, dense2 = model.layers
    assert conv1.filters == 32 and conv1.kernel_size == (3, 3)
    assert conv1.kernel_initializer.__class__.__name__ == "HeNormal"
    assert conv2.filters == 128 and dense1.units == 128 and dense2.units == 10
    assert (drop1.rate, drop2.rate, drop3.rate) == (0.25, 0.4, 0.3)
    # 28x28 -> conv 26x26x32 -> pool 13x13 -> conv 11x11x128 = 15,488 features
    assert model.count_params() == 320 + 36992 + 15488 * 128 + 128 + 1290
    out = model.predict(np.zeros((4, 28, 28, 1), np.float32), verbose=0)
    assert out.shape == (4, 10) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert model.loss == "categorical_crossentropy"
    assert model.steps_per_execution == 64
    assert build_course_cnn(total_steps=10, steps_per_execution=1).steps_per_execution == 1


def test_cosine_schedule_halves_at_the_middle_and_ends_at_zero():
    model = build_course_cnn(lr_schedule="cosine", learning_rate=1e-3, total_steps=100)
    schedule = keras.optimizers.schedules.deserialize(model.optimizer.get_config()["learning_rate"])
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(25)) == pytest.approx(1e-3 * (1 + np.cos(np.pi / 4)) / 2)
    assert float(schedule(50)) == pytest.approx(0.5e-3)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-12)


def test_constant_schedule_is_the_course_rate():
    model = build_course_cnn(lr_schedule="constant")
    assert model.optimizer.get_config()["learning_rate"] == pytest.approx(1e-3)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        build_course_cnn(lr_schedule="step")
    with pytest.raises(ValueError, match="needs total_steps"):
        build_course_cnn(lr_schedule="cosine")
