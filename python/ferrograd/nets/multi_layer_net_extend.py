"""The book's ``MultiLayerNetExtend`` (DLFS common/multi_layer_net_extend.py).

:class:`MultiLayerNet` under the book's name and positional order, with the book's
``dropout_ration`` spelling: ``(input_size, hidden_size_list, output_size,
activation, weight_init_std, weight_decay_lambda, use_dropout, dropout_ration,
use_batchnorm)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ferrograd.nets.multi_layer_net import MultiLayerNet

__all__ = ["MultiLayerNetExtend"]


class MultiLayerNetExtend(MultiLayerNet):
    """:class:`MultiLayerNet` with the book's name and positional order.

    As DLFS common/multi_layer_net_extend.py: dropout and batch norm are positional
    arguments, the dropout ratio is spelled ``dropout_ration``.

    Parameters
    ----------
    input_size : int
        D, e.g. 784.
    hidden_size_list : sequence of int
        Width of each hidden layer.
    output_size : int
        K, e.g. 10.
    activation : {"relu", "sigmoid"}, default "relu"
        Hidden activation.
    weight_init_std : float or str, default "relu"
        "relu"/"he", "sigmoid"/"xavier" or a number >= 0.
    weight_decay_lambda : float, default 0
        λ of the L2 weight decay.
    use_dropout : bool, default False
        Dropout after each hidden activation.
    dropout_ration : float, default 0.5
        Probability of dropping a unit (the book's spelling).
    use_batchnorm : bool, default False
        Batch normalization after each hidden Affine.
    seed : int, optional
        Seed of the weights and dropout masks; None: NumPy's global generator.
    dtype : dtype_like, default float64
        float64 or float32.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std: str | float = "relu",
        weight_decay_lambda: float = 0,
        use_dropout: bool = False,
        dropout_ration: float = 0.5,
        use_batchnorm: bool = False,
        *,
        seed: int | None = None,
        dtype: np.dtype | type = np.float64,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size_list,
            output_size,
            activation,
            weight_init_std,
            weight_decay_lambda,
            use_batchnorm=use_batchnorm,
            use_dropout=use_dropout,
            dropout_ratio=dropout_ration,
            seed=seed,
            dtype=dtype,
        )
