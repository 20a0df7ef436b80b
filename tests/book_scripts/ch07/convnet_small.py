# coding: utf-8
import sys, os
sys.path.append(os.pardir)
import numpy as np
from dataset.mnist import load_mnist
from simple_convnet import SimpleConvNet
from common.trainer import Trainer
from common.layers import Convolution, Pooling

(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)
x_train, t_train = x_train[:300], t_train[:300]
x_test, t_test = x_test[:200], t_test[:200]

np.random.seed(0)
network = SimpleConvNet(input_dim=(1, 28, 28),
                        conv_param={'filter_num': 8, 'filter_size': 5, 'pad': 0, 'stride': 1},
                        hidden_size=30, output_size=10, weight_init_std=0.1)

X = np.random.rand(2 * 784).reshape((2, 1, 28, 28))
T = np.array([1, 3]).reshape((2, 1))
grad = network.gradient(X, T)
print("grad keys:", " ".join(sorted(grad)))

trainer = Trainer(network, x_train, t_train, x_test, t_test,
                  epochs=5, mini_batch_size=100,
                  optimizer='Adam', optimizer_param={'lr': 0.003},
                  evaluate_sample_num_per_epoch=100)
trainer.train()
network.save_params("params.pkl")
network.load_params("params.pkl")

conv = Convolution(network.params['W1'][:1], 0)
out = conv.forward(x_test[:1].astype(np.float32))
pool = Pooling(pool_h=2, pool_w=2, stride=2)
print("conv:", out.shape, "pool:", pool.forward(out).shape)
print("final:", trainer.test_acc_list[-1])
