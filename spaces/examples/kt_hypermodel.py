"""A KerasTuner hypermodel for the Pima data, written only against KerasTuner's API.

It runs unchanged under KerasTuner's own tuners and, through capsearch, on Optuna:

    capsearch run spaces/examples/kt_pima.toml          # Optuna samples every hp.* call
    capsearch kt spaces/examples/kt_pima.toml           # KerasTuner's Hyperband, same data

Searched: the depth and width of a Dense stack, dropout, the learning rate (log scale), whether
to use an L2 penalty and, only then, its strength (a conditional scope), and the batch size,
which is chosen in ``fit`` (a HyperModel subclass may search training settings there).
"""

import keras
import keras_tuner

N_FEATURES = 8  # the Pima data: 8 standardized measurements, one 0/1 label


class PimaHyperModel(keras_tuner.HyperModel):
    """Dense layers with optional L2 and dropout, a sigmoid output, Adam."""

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        layers = hp.Int("layers", min_value=1, max_value=3)
        units = hp.Int("units", min_value=4, max_value=64, step=4)
        dropout = hp.Float("dropout", min_value=0.0, max_value=0.5)
        learning_rate = hp.Float("learning_rate", min_value=1e-4, max_value=3e-2, sampling="log")
        use_l2 = hp.Boolean("use_l2", default=False)
        with hp.conditional_scope("use_l2", [True]):
            # Only searched when use_l2 is True; KerasTuner returns None otherwise.
            l2 = hp.Float("l2", min_value=1e-5, max_value=1e-1, sampling="log")
        regularizer = keras.regularizers.L2(l2) if use_l2 else None

        inputs = keras.Input(shape=(N_FEATURES,))
        x = inputs
        for _ in range(layers):
            x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer)(x)
            x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(1, activation="sigmoid")(x)
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
            loss="binary_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args, **kwargs):
        """Train with a searched batch size; the tuner's arguments pass through unchanged."""
        batch_size = hp.Choice("batch_size", [16, 32, 64, 128])
        return model.fit(*args, batch_size=batch_size, **kwargs)


def build_model(hp: keras_tuner.HyperParameters) -> keras.Model:
    """The same model as a plain build function (its batch size is Keras' default, 32)."""
    return PimaHyperModel().build(hp)
