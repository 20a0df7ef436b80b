"""Chapter 8's module (deep_convnet) on ferrograd."""
