"""Sub-commands of the CLI: every module here registers its own with ``worker.cli.command``."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
