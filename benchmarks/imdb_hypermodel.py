"""The imdb_generalize search space as a KerasTuner hypermodel, on KerasTuner's API only.

Used by ``benchmarks/bench_search.py`` (P4) to run KerasTuner's own Hyperband on the space that
``spaces/imdb_generalize.toml`` declares for this service:

* ``layers`` 1-3 Dense layers of ``units`` 4-512 (log), ReLU, dropout 0-0.7 after each;
* an L2 kernel penalty, off or 1e-6-1e-2 (log): ``use_l2`` with ``l2`` in a conditional scope;
* RMSprop or Adam at a learning rate of 1e-4-1e-2 (log);
* the batch size, 64-1024, chosen in ``fit``.

The input is IMDB's 10,000-word multi-hot rows as a SciPy sparse matrix; the output one sigmoid
unit with binary cross-entropy. ``data_loss`` is the cross-entropy without the L2 penalty, so
``val_data_loss`` (measured by Keras in inference mode on the validation data) compares with the
data loss this service ranks trials by.
"""

from typing import Any

import keras
import keras_tuner

N_WORDS = 10000
BATCH_SIZES = [64, 128, 256, 512, 1024]


class ImdbHyperModel(keras_tuner.HyperModel):
    """A Dense stack with optional L2 and dropout, sigmoid output, RMSprop or Adam."""

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        layers = hp.Int("layers", min_value=1, max_value=3)
        units = hp.Int("units", min_value=4, max_value=512, sampling="log")
        use_l2 = hp.Boolean("use_l2", default=False)
        with hp.conditional_scope("use_l2", [True]):
            l2 = hp.Float("l2", min_value=1e-6, max_value=1e-2, sampling="log")
        dropout = hp.Float("dropout", min_value=0.0, max_value=0.7)
        learning_rate = hp.Float("learning_rate", min_value=1e-4, max_value=1e-2, sampling="log")
        optimizer = hp.Choice("optimizer", ["rmsprop", "adam"])
        regularizer = keras.regularizers.L2(l2) if use_l2 else None

        inputs = keras.Input(shape=(N_WORDS,), sparse=True)
        x = inputs
        for _ in range(layers):
            x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer)(x)
            if dropout > 0:
                x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(1, activation="sigmoid")(x)
        model = keras.Model(inputs, outputs)
        optimizers = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}
        model.compile(
            optimizer=optimizers[optimizer](learning_rate=learning_rate),
            loss="binary_crossentropy",
            metrics=[
                keras.metrics.MeanMetricWrapper(keras.losses.binary_crossentropy, name="data_loss"),
                "accuracy",
            ],
        )
        return model

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> Any:
        """Train with a searched batch size; the tuner's arguments pass through unchanged."""
        return model.fit(*args, batch_size=hp.Choice("batch_size", BATCH_SIZES), **kwargs)
