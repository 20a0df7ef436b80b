# coding: utf-8
import sys, os
sys.path.append(os.pardir)
import numpy as np
from deep_convnet import DeepConvNet
from dataset.mnist import load_mnist


(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)

network = DeepConvNet()
network.load_params("deep_convnet_params.pkl")

sampled = 200
x_test = x_test[:sampled]
t_test = t_test[:sampled]

print("float64:", network.accuracy(x_test, t_test))

x_test = x_test.astype(np.float16)
for param in network.params.values():
    param[...] = param.astype(np.float16)

print("float16:", network.accuracy(x_test, t_test))
print("dtype:", network.params["W1"].dtype, len(set(network.params["W1"].ravel().tolist())))
