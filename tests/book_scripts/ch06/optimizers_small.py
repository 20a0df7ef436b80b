# coding: utf-8
import sys, os
sys.path.append(os.pardir)
import matplotlib.pyplot as plt
from dataset.mnist import load_mnist
from common.util import smooth_curve
from common.multi_layer_net import MultiLayerNet
from common.optimizer import *

# np comes with the star import, as in the book
params = {"x": -7.0, "y": 2.0}
for name, opt in [("SGD", SGD(lr=0.95)), ("Momentum", Momentum(lr=0.1))]:
    params = {"x": -7.0, "y": 2.0}
    for i in range(2):
        opt.update(params, {"x": params["x"] / 10.0, "y": 2.0 * params["y"]})
    print(name, float(params["x"]), float(params["y"]))

(x_train, t_train), (x_test, t_test) = load_mnist(normalize=True)
np.random.seed(3)
optimizers = {"SGD": SGD(), "Adam": Adam()}
networks, train_loss = {}, {}
for key in optimizers:
    networks[key] = MultiLayerNet(784, [50, 50], 10)
    train_loss[key] = []
for i in range(200):
    batch_mask = np.random.choice(x_train.shape[0], 64)
    for key in optimizers:
        grads = networks[key].gradient(x_train[batch_mask], t_train[batch_mask])
        optimizers[key].update(networks[key].params, grads)
        train_loss[key].append(networks[key].loss(x_train[batch_mask], t_train[batch_mask]))
for key in optimizers:
    print(key, "smoothed:", float(smooth_curve(train_loss[key])[-1]))
plt.plot(smooth_curve(train_loss["Adam"]))
plt.savefig("adam.png")
