"""The book's ``dataset`` package (DLFS dataset/) on ferrograd's MNIST loader."""
