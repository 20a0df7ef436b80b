# coding: utf-8
import sys, os
sys.path.append(os.pardir)
import numpy as np
from dataset.mnist import load_mnist
from common.multi_layer_net_extend import MultiLayerNetExtend
from common.trainer import Trainer
from common.util import shuffle_dataset

(x_train, t_train), (x_test, t_test) = load_mnist(normalize=True)
x_train, t_train = x_train[:300], t_train[:300]

np.random.seed(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
x_train, t_train = shuffle_dataset(x_train, t_train)
network = MultiLayerNetExtend(input_size=784, hidden_size_list=[100, 100], output_size=10,
                              use_dropout=True, dropout_ration=0.2)
trainer = Trainer(network, x_train, t_train, x_test, t_test,
                  epochs=5, mini_batch_size=100,
                  optimizer='sgd', optimizer_param={'lr': 0.01}, verbose=True)
trainer.train()
print("lists:", len(trainer.train_acc_list), len(trainer.test_acc_list), len(trainer.train_loss_list))
print("final:", trainer.test_acc_list[-1])
