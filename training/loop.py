"""The custom training loop's compiled pieces: a multi-step train function and an evaluation function.

Both work for any model object with ``__call__(images, training)`` and ``trainable_variables`` (the Keras CNN
and the low-level reference alike) under any ``tf.distribute.Strategy``.
"""

import keras
import tensorflow as tf

# Forward passes per image of each test-time augmentation (augmented_logits).
TTA_VIEWS = {"none": 1, "flip": 2, "flip_translate": 6}


def make_train_loop(model, optimizer, loss_fn, metrics, strategy, global_batch_size, jit_compile=False,
                    gradient_scales=None, step_hooks=()):
    """Returns ``train_loop(iterator, num_steps) -> per-step losses`` as a ``tf.function``.

    ``loss_fn`` gives one loss per example; each replica divides its sum by the *global* batch size, so the
    gradients summed across replicas are those of the mean loss over the global batch. ``metrics`` is a
    ``(mean_loss, accuracy)`` pair of Keras metrics created in ``strategy.scope()``. A Keras
    ``LossScaleOptimizer`` scales the loss in the tape and unscales the gradients in ``apply_gradients``; for
    other optimizers ``scale_loss`` returns the loss unchanged. ``gradient_scales`` (one float per trainable
    variable, or None) multiplies each gradient; each of ``step_hooks`` (``training.freezing.FreezeAfter``,
    ``training.lookahead.Lookahead``: objects with ``after_step(step)``) acts after each optimizer step, in order.
    """
    mean_loss, accuracy = metrics

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example_loss = loss_fn(labels, logits)
            loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
            scaled_loss = optimizer.scale_loss(loss)
        variables = model.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        if gradient_scales is not None:
            gradients = [g if scale == 1 else g * scale for g, scale in zip(gradients, gradient_scales)]
        optimizer.apply_gradients(zip(gradients, variables))
        mean_loss.update_state(per_example_loss)
        accuracy.update_state(labels, logits)
        return loss

    if jit_compile:
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def train_loop(iterator, num_steps):
        # A Python int unrolls the steps into the graph (one trace per value): a profiled step then runs in a call
        # without a TensorFlow while loop, the only kind whose step marker the profiler's overview page counts on
        # a CPU-only host (README, Profiling). A tensor runs them in one while loop, traced once.
        losses = tf.TensorArray(tf.float32, size=num_steps)
        for i in range(num_steps) if isinstance(num_steps, int) else tf.range(num_steps):
            images, labels = next(iterator)
            replica_losses = strategy.run(replica_step, args=(images, labels))
            losses = losses.write(i, strategy.reduce(tf.distribute.ReduceOp.SUM, replica_losses, axis=None))
            for hook in step_hooks:
                hook.after_step(optimizer.iterations)
        return losses.stack()

    return train_loop


def make_eval_step(model, loss_fn, metrics, strategy, test_time_augmentation="none", confusion=None):
    """Returns ``eval_step(distributed_batch)`` as a ``tf.function`` updating ``(mean_loss, accuracy)``, and
    ``confusion`` (a ``ConfusionCounts``) when given.

    ``test_time_augmentation`` (one of ``choices.TTA_MODES``) averages the logits over views of each image.
    """
    mean_loss, accuracy = metrics

    def replica_step(images, labels):
        logits = augmented_logits(model, images, test_time_augmentation)
        mean_loss.update_state(loss_fn(labels, logits))
        accuracy.update_state(labels, logits)
        if confusion is not None:
            confusion.update_state(labels, logits)

    @tf.function
    def eval_step(batch):
        strategy.run(replica_step, args=batch)

    return eval_step


class ConfusionCounts(keras.metrics.Metric):
    """Images counted by (true class, predicted class): the confusion matrix of an evaluation. Create it in the
    strategy's scope; replicas' counts are summed."""

    def __init__(self, num_classes, name="confusion_counts"):
        super().__init__(name=name)
        self.num_classes = num_classes
        # float32 counts are exact up to 2**24 images.
        self.counts = self.add_variable(shape=(num_classes, num_classes), initializer="zeros", dtype="float32",
                                        aggregation="sum", name="counts")

    def update_state(self, labels, logits):
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        self.counts.assign_add(tf.math.confusion_matrix(tf.reshape(tf.cast(labels, tf.int32), [-1]), predicted,
                                                        self.num_classes, dtype=tf.float32))

    def result(self):
        return tf.convert_to_tensor(self.counts)


def augmented_logits(model, images, mode="none"):
    """float32 logits of ``images`` (B, H, W, C), averaged over the views ``mode`` names.

    flip: the image and its left-right mirror, equally weighted. flip_translate: airbench94's six views, half
    the weight on those two and half on the image shifted by one pixel down-right and up-left (reflected
    padding, then a crop), each with its mirror.
    """
    def logits(view):
        return tf.cast(model(view, training=False), tf.float32)

    def mirrored(view):
        return (logits(view) + logits(tf.image.flip_left_right(view))) / 2

    if mode == "none":
        return logits(images)
    if mode == "flip":
        return mirrored(images)
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    down_right, up_left = padded[:, :height, :width, :], padded[:, 2:, 2:, :]
    return mirrored(images) / 2 + (mirrored(down_right) + mirrored(up_left)) / 4
