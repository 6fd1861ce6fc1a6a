"""The one exception type that user mistakes raise; the CLI prints it as one line."""


class ZhembedError(ValueError):
    """A problem with the user's input (a file, a model directory, an argument)."""
