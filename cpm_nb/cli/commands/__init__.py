"""The command layer: one module per ``cpm-nb`` subcommand.

Each module defines ``COMMAND`` (a :class:`cpm_nb.cli.options.Command`): it parses options,
calls the library with explicit configurations, and lets library errors
(:class:`cpm_nb.core.errors.CpmError`) reach :func:`cpm_nb.cli.app.main`, which prints them as
one line.  Library modules never import this package or :mod:`cpm_nb.cli.app`.
Heavy imports (TensorFlow, Keras) happen inside ``run`` so ``cpm-nb --help`` stays quick.
"""
