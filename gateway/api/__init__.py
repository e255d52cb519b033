"""The Mnexium REST resources, one module each."""
