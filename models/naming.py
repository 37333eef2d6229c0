"""Weight names shared by the Keras models and the reference network (no Keras import, so both can use it)."""


def named_layer_weights(layers):
    """Maps ``"<layer>/<sublayer>/<variable>"`` to each variable of ``layers`` (Keras layers, read by duck typing).

    A Keras variable's ``path`` is ``<model>/<layer>/.../<variable>``; the name drops the model's part, so it
    reads the same whatever the model is called. These names are what ``reference/`` calls its variables.
    """
    named = {}
    for layer in layers:
        for variable in layer.weights:
            parts = variable.path.split("/")
            named["/".join(parts[parts.index(layer.name):])] = variable
    return named
