# coding: utf-8
import sys, os
sys.path.append(os.pardir)
import numpy as np
from gradient_2d import numerical_gradient, function_2
from two_layer_net import TwoLayerNet

x = np.array([-3.0, 4.0])
for i in range(100):
    x -= 0.1 * numerical_gradient(function_2, x)
print("x:", x[0], x[1])
print("field:", numerical_gradient(function_2, np.array([[1.0, 2.0], [-0.5, 0.0]])).tolist())

np.random.seed(0)
net = TwoLayerNet(input_size=4, hidden_size=3, output_size=2)
print("W1[0,0]:", net.params["W1"][0, 0])
print("predict sums:", net.predict(np.ones((2, 4))).sum(axis=1).tolist())
print("argv:", sys.argv[1:])
print("cwd:", os.path.basename(os.getcwd()))
