"""One module per method. Each defines a frozen ``Params`` dataclass, a generator ``run`` and
``SPEC``."""
