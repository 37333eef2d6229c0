"""Predict with an exported run: ``python -m training.predict --run_dir=RUN image.png [more.jpg x.npz ...]``.

Prints, per image, the ``--top_k`` most probable classes with their probabilities (then a line on label smoothing
when the run trained with it; images that look inverted relative to the training images are named in one warning
on stderr); with ``--dataset_split=test`` instead, the run's accuracy on its test set, and the path of its
confusion matrix drawn into ``RUN/inspect/confusion_test.png``. Reads ``RUN/export/model.keras`` in Keras'
safe mode, or for a run without one rebuilds the run's network from its checkpoint; ``RUN/export/saved_model``
only with ``--allow_saved_model``. Refuses a run without an export (export it first with
``python -m training.export``); see ``training/predicting.py``.
"""

import sys

from absl import flags as absl_flags

from flags import cli, predict_flags

predict_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(images):
    if bool(images) == bool(FLAGS.dataset_split):
        cli.fail("predict", "give image files (PNG or JPEG, or .npz holding x_test or x) or --dataset_split=test, "
                 "one of the two", status=2)
    from experiments import inspection
    from training import predicting

    if FLAGS.dataset_split:
        evaluation = predicting.evaluate_split(FLAGS.run_dir, FLAGS.dataset_split, FLAGS.data_dir,
                                               FLAGS.allow_saved_model)
        print(predicting.format_evaluation(evaluation))
        print(f"confusion matrix: {inspection.write_confusion_picture(FLAGS.run_dir, evaluation)}")
        return
    from training import trained_run

    predictions = predicting.predict_files(FLAGS.run_dir, images, FLAGS.top_k, FLAGS.allow_saved_model)
    for prediction in predictions:
        print(predicting.format_prediction(prediction))
    config = trained_run.read_config(FLAGS.run_dir)
    note = predicting.smoothing_note(config, trained_run.run_info(FLAGS.run_dir, config).num_classes)
    if note:
        print(note)
    warning = predicting.inverted_warning(predictions)
    if warning:
        print(f"predict: warning: {warning}", file=sys.stderr)


if __name__ == "__main__":
    cli.run('predict', main, positional=True)
