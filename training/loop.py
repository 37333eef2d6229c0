"""The custom training loop's compiled pieces: a multi-step train function and an evaluation function.

Both work for any model object with ``__call__(images, training)`` and ``trainable_variables`` (the Keras CNN
and the low-level reference alike) under any ``tf.distribute.Strategy``.
"""

import tensorflow as tf

TTA_MODES = ("none", "flip", "flip_translate")


def make_train_loop(model, optimizer, loss_fn, metrics, strategy, global_batch_size, jit_compile=False):
    """Returns ``train_loop(iterator, num_steps) -> per-step losses`` as a ``tf.function``.

    ``loss_fn`` gives one loss per example; each replica divides its sum by the *global* batch size, so the
    gradients summed across replicas are those of the mean loss over the global batch. ``metrics`` is a
    ``(mean_loss, accuracy)`` pair of Keras metrics created in ``strategy.scope()``. A Keras
    ``LossScaleOptimizer`` scales the loss in the tape and unscales the gradients in ``apply_gradients``; for
    other optimizers ``scale_loss`` returns the loss unchanged.
    """
    mean_loss, accuracy = metrics

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example_loss = loss_fn(labels, logits)
            loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
            scaled_loss = optimizer.scale_loss(loss)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(scaled_loss, variables), variables))
        mean_loss.update_state(per_example_loss)
        accuracy.update_state(labels, logits)
        return loss

    if jit_compile:
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def train_loop(iterator, num_steps):
        losses = tf.TensorArray(tf.float32, size=num_steps)
        for i in tf.range(num_steps):
            images, labels = next(iterator)
            replica_losses = strategy.run(replica_step, args=(images, labels))
            losses = losses.write(i, strategy.reduce(tf.distribute.ReduceOp.SUM, replica_losses, axis=None))
        return losses.stack()

    return train_loop


def make_eval_step(model, loss_fn, metrics, strategy, test_time_augmentation="none"):
    """Returns ``eval_step(distributed_batch)`` as a ``tf.function`` updating ``(mean_loss, accuracy)``.

    ``test_time_augmentation`` (one of ``TTA_MODES``) averages the logits over views of each image.
    """
    mean_loss, accuracy = metrics

    def replica_step(images, labels):
        logits = augmented_logits(model, images, test_time_augmentation)
        mean_loss.update_state(loss_fn(labels, logits))
        accuracy.update_state(labels, logits)

    @tf.function
    def eval_step(batch):
        strategy.run(replica_step, args=batch)

    return eval_step


def augmented_logits(model, images, mode="none"):
    """float32 logits of ``images`` (B, H, W, C), averaged over the views ``mode`` names.

    flip: the image and its left-right mirror. flip_translate: those two and both shifted by one pixel down and
    right (reflected padding, then a crop), the views airbench94's test-time augmentation adds.
    """
    views = [images]
    if mode in ("flip", "flip_translate"):
        views.append(tf.image.flip_left_right(images))
    if mode == "flip_translate":
        height, width = images.shape[1], images.shape[2]
        views += [tf.pad(view, [[0, 0], [1, 0], [1, 0], [0, 0]], mode="REFLECT")[:, :height, :width, :]
                  for view in views[:2]]
    return tf.add_n([tf.cast(model(view, training=False), tf.float32) for view in views]) / len(views)
