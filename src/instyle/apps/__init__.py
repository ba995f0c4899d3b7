"""The apps on top of the style engine: the command line, the web page, the demo, the experiments.

The only layer that parses arguments and prints; it turns config field names into flags.
"""
