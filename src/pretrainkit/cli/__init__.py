"""The ``pretrainkit`` command line."""
