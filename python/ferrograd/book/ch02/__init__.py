"""Chapter 2's modules (and_gate, or_gate, nand_gate, xor_gate) on ferrograd.perceptron."""
