"""The book's ``common`` package (DLFS common/) on ferrograd: same module and class names."""
