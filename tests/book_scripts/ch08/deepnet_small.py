# coding: utf-8
import sys, os
sys.path.append(os.pardir)
import numpy as np
from dataset.mnist import load_mnist
from deep_convnet import DeepConvNet

(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)

np.random.seed(0)
network = DeepConvNet()
print("params:", len(network.params), network.params['W7'].shape)
grads = network.gradient(x_train[:8], t_train[:8])
print("grads:", all(grads[k].shape == network.params[k].shape for k in network.params))
print("acc:", network.accuracy(x_test[:50], t_test[:50], batch_size=20))
