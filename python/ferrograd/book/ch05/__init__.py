"""Chapter 5's modules (layer_naive, two_layer_net) on ferrograd."""
