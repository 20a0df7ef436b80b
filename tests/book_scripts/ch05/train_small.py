# coding: utf-8
import sys, os
sys.path.append(os.pardir)
import numpy as np
from dataset.mnist import load_mnist
from two_layer_net import TwoLayerNet
from layer_naive import MulLayer

apple = MulLayer()
print("price:", apple.forward(100, 2))

(x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, one_hot_label=True)
print("shapes:", x_train.shape, t_train.shape, t_train.dtype)

np.random.seed(1)
network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
x_batch, t_batch = x_train[:3], t_train[:3]
grad_numerical = network.numerical_gradient(x_batch, t_batch)
grad_backprop = network.gradient(x_batch, t_batch)
for key in grad_numerical.keys():
    diff = np.average(np.abs(grad_backprop[key] - grad_numerical[key]))
    print(key + ":" + str(diff))
print("relu:", type(network.layers["Relu1"]).__name__)
print("scores:", float(network.predict(x_batch).sum()))

for i in range(300):
    batch_mask = np.random.choice(x_train.shape[0], 100)
    grad = network.gradient(x_train[batch_mask], t_train[batch_mask])
    for key in ("W1", "b1", "W2", "b2"):
        network.params[key] -= 0.1 * grad[key]
print("test acc:", network.accuracy(x_test, t_test))
