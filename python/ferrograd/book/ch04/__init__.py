"""Chapter 4's modules (two_layer_net, gradient_2d) on ferrograd."""
