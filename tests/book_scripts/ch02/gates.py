# coding: utf-8
import sys, os
sys.path.append(os.pardir)
from and_gate import AND
from nand_gate import NAND
from or_gate import OR

for xs in [(0, 0), (1, 0), (0, 1), (1, 1)]:
    print(str(xs) + " -> " + str(AND(OR(*xs), NAND(*xs))))
