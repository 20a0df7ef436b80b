"""Chapter 7's module (simple_convnet) on ferrograd."""
