"""A Dense layer for multi-hot input: ``x @ kernel`` with ``x`` a ``tf.SparseTensor``, fast on CPU.

Keras' ``Dense`` multiplies a sparse input through ``tf.nn.embedding_lookup_sparse`` (a gather
of one kernel row per non-zero, then a segment sum), whose gradient is an ``IndexedSlices`` of
the same size that the optimizer then densifies. On IMDB batches (512 reviews, ~130 distinct
words each, 10,000 words) that costs 4 ms per step at 16 units and 160 ms at 512, more than the
dense product of the densified batch. :class:`SparseInputDense` computes the same product with
TensorFlow's sparse kernels instead:

* narrow layers (fewer than :data:`CSR_FROM_UNITS` units): ``tf.sparse.sparse_dense_matmul``,
  whose gradient is the adjoint product (about 1 ms per IMDB step at 16 units);
* wide layers: the CSR sparse-matrix kernels (``SparseMatrixMatMul``), forward with the batch in
  CSR form and the kernel's gradient ``x^T @ g`` with the transposed CSR matrix (about 16 ms
  per IMDB step at 512 units, against 40-65 ms for the densified batch's dense matmul).

A graph traced for kernels of any width (``search.training.shared_graphs`` traces one per layer
structure and runs it for every trial of that structure) picks between the two at run time, in
the forward product and in its gradient alike.

The mathematics is the dense layer's: same kernel, bias and activation, same gradients up to
float32 summation order (tested against ``keras.layers.Dense`` on the densified input). Inputs
that are not sparse, or not float32 (mixed precision), take ``keras.layers.Dense``'s own path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import tensorflow as tf

# Output width from which the CSR kernels beat tf.sparse.sparse_dense_matmul: TensorFlow's COO
# kernel takes a slower loop from 32 columns on (IMDB, Dense 31-31: 98 ms an epoch through COO,
# 102 ms through CSR; at 37 units validation takes 40 ms through COO, 12 ms through CSR).
CSR_FROM_UNITS = 32
# Narrow CSR products are padded to a multiple of this width (see _aligned_product).
_WIDTH_MULTIPLE = 8
_PAD_BELOW_UNITS = 128


@keras.saving.register_keras_serializable(package="capsearch")
class SparseInputDense(keras.layers.Dense):
    """``keras.layers.Dense`` with a fast product for a ``tf.SparseTensor`` input.

    Takes the same arguments as ``keras.layers.Dense``. Use it as the first layer after
    ``keras.Input(shape=(n,), sparse=True)``; :func:`plain_dense_copy` turns a model that uses
    it into one with plain ``keras.layers.Dense`` layers (same weights) for saving.

    Example:
        >>> inputs = keras.Input(shape=(10000,), sparse=True)
        >>> hidden = SparseInputDense(16, activation="relu")(inputs)
    """

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not isinstance(inputs, tf.SparseTensor) or inputs.dtype != tf.float32:
            return super().call(inputs, training=training)
        kernel = tf.convert_to_tensor(self.kernel)
        if kernel.dtype != tf.float32:
            return super().call(tf.sparse.to_dense(inputs), training=training)
        outputs = sparse_matmul(inputs, kernel)
        if self.bias is not None:
            outputs = tf.nn.bias_add(outputs, tf.convert_to_tensor(self.bias))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


def sparse_matmul(x: tf.SparseTensor, kernel: tf.Tensor, *, csr: bool | None = None) -> tf.Tensor:
    """``x @ kernel`` for a rank-2 sparse ``x`` in row-major order, differentiable in ``kernel``.

    ``csr`` picks the CSR kernels (wide outputs) or the COO product (narrow ones); by default
    the kernel's width decides, against :data:`CSR_FROM_UNITS`: its static width when known,
    else its width at run time (a ``tf.cond``, so one traced graph serves every width).

    Example:
        >>> x = tf.sparse.from_dense(tf.constant([[0.0, 1.0], [2.0, 0.0]]))
        >>> sparse_matmul(x, tf.constant([[1.0], [10.0]])).numpy().ravel().tolist()
        [10.0, 2.0]
    """
    if csr is None and kernel.shape[-1] is not None:
        csr = kernel.shape[-1] >= CSR_FROM_UNITS
    if csr is not None and not csr:
        return tf.sparse.sparse_dense_matmul(x, kernel)  # TensorFlow's gradient: the same
    return _product(x, kernel, chosen_at_run_time=csr is None)


class _Kernels(NamedTuple):
    """One product (or its gradient) through either kernel, as zero-argument functions."""

    csr: Callable[[], tf.Tensor]
    coo: Callable[[], tf.Tensor]


def _product(x: tf.SparseTensor, kernel: tf.Tensor, *, chosen_at_run_time: bool) -> tf.Tensor:
    """The CSR product, or (``chosen_at_run_time``) CSR or COO by the kernel's run-time width."""

    # The gradient with respect to the sparse input is never needed (it is data), so only the
    # kernel's is defined.
    def to_csr() -> tf.Tensor:
        return tf.raw_ops.SparseTensorToCSRSparseMatrix(
            indices=x.indices, values=x.values, dense_shape=x.dense_shape
        )

    if chosen_at_run_time:
        wide = tf.shape(kernel)[-1] >= CSR_FROM_UNITS

        def choose(fast: _Kernels) -> tf.Tensor:
            return tf.cond(wide, fast.csr, fast.coo)

        # Built inside the CSR branches (forward and gradient), so the COO branch never pays.
        csr_matrix = to_csr
    else:

        def choose(fast: _Kernels) -> tf.Tensor:
            return fast.csr()

        matrix = to_csr()  # built once, for the product and its gradient

        def csr_matrix() -> tf.Tensor:
            return matrix

    @tf.custom_gradient
    def product(weights: tf.Tensor) -> tuple[tf.Tensor, Any]:
        outputs = choose(
            _Kernels(
                csr=lambda: _aligned_product(csr_matrix(), weights),
                coo=lambda: tf.sparse.sparse_dense_matmul(x, weights),
            )
        )

        def gradient(upstream: tf.Tensor) -> tf.Tensor:
            # x^T @ g. CSR: through an explicit transpose, several times faster on CPU than
            # SparseMatrixMatMul(adjoint_a=True) or the COO adjoint product; COO: the adjoint
            # product, as TensorFlow's own gradient of sparse_dense_matmul.
            def transposed() -> tf.Tensor:
                return tf.raw_ops.SparseMatrixTranspose(input=csr_matrix(), type=tf.float32)

            return choose(
                _Kernels(
                    csr=lambda: _aligned_product(transposed(), upstream),
                    coo=lambda: tf.sparse.sparse_dense_matmul(x, upstream, adjoint_a=True),
                )
            )

        return outputs, gradient

    outputs = product(kernel)
    outputs.set_shape([x.shape[0], kernel.shape[-1]])
    return outputs


def _aligned_product(matrix: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``matrix @ weights``, narrow ``weights`` padded with zero columns to a multiple of 8.

    TensorFlow's CSR product runs up to 3x faster on such widths (IMDB validation: 20.7 ms at
    37 units, 7.2 ms at 40). Wide kernels gain nothing and would pay for the copy.
    """

    def padded() -> tf.Tensor:
        units = tf.shape(weights)[-1]
        wider = tf.pad(weights, [[0, 0], [0, -units % _WIDTH_MULTIPLE]])
        return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=wider)[:, :units]

    def plain() -> tf.Tensor:
        return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=weights)

    def misaligned(units: Any) -> Any:  # a Python int or an int tensor
        return (units % _WIDTH_MULTIPLE != 0) & (units < _PAD_BELOW_UNITS)

    static_units = weights.shape[-1]
    if static_units is not None:
        return padded() if misaligned(static_units) else plain()
    return tf.cond(misaligned(tf.shape(weights)[-1]), padded, plain)


def plain_dense_copy(model: keras.Model) -> keras.Model:
    """The same model with every :class:`SparseInputDense` replaced by ``keras.layers.Dense``.

    ``model`` itself when it has none. A saved ``.keras`` file then loads with Keras alone (no
    import of this package); the predictions are the same, only the speed of sparse inputs
    differs.
    """

    if not any(isinstance(layer, SparseInputDense) for layer in model.layers):
        return model

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, SparseInputDense):
            return keras.layers.Dense.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    plain = keras.models.clone_model(model, clone_function=clone)
    plain.set_weights(model.get_weights())
    return plain
