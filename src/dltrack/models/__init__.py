"""The models the notebooks train or load: the course's Keras CNN (:mod:`.keras_cnn`), its
Lightning CNN and data module (:mod:`.lightning_cnn`), the learning-rate schedules both share
(:mod:`.schedules`), and which sentiment model notebook 03 loads (:mod:`.sentiment`).

Framework modules import their framework, so import them by name::

    from dltrack.models import keras_cnn          # TensorFlow / Keras
    from dltrack.models.lightning_cnn import FashionMNISTCNN  # PyTorch / Lightning
"""

from dltrack.models.schedules import LR_SCHEDULES, check_lr_schedule

__all__ = ["LR_SCHEDULES", "check_lr_schedule"]
