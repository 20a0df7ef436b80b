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
    """MultiLayerNet with dropout and batch normalization as positional options."""

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
