"""The classification loss: Keras cross-entropy on logits, with optional label smoothing."""

import keras


@keras.saving.register_keras_serializable("cnn_lab")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against logits, with labels smoothed towards uniform by ``smoothing``.

    Keras' sparse cross-entropy has no label smoothing; this one-hot encodes and uses the categorical one.
    """

    def __init__(self, num_classes, smoothing, reduction="sum_over_batch_size", name="smoothed_crossentropy"):
        super().__init__(reduction=reduction, name=name)
        self.num_classes, self.smoothing = num_classes, smoothing

    def call(self, labels, logits):
        one_hot = keras.ops.one_hot(keras.ops.reshape(labels, (-1,)), self.num_classes, dtype=logits.dtype)
        return keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True,
                                                     label_smoothing=self.smoothing)

    def get_config(self):
        return {"num_classes": self.num_classes, "smoothing": self.smoothing, **super().get_config()}


def classification_loss(num_classes, label_smoothing=0.0, reduction="sum_over_batch_size"):
    """A Keras loss ``(labels, logits) -> loss``; ``reduction=None`` gives one loss per example."""
    if label_smoothing:
        return SmoothedSparseCrossentropy(num_classes, label_smoothing, reduction=reduction)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
