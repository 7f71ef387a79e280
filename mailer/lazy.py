"""Names a package exports but imports only on first use (PEP 562 module `__getattr__`).

Start-up is on the clock for a command-line publish (a policy notice's first message must leave
within a second of `mailer policy publish` starting), and a package's `__init__` that imports
every module it exports makes each importer pay for all of them: `mailer.delivery` would load
the delivery engine (transports, the message builder) into a process that only plans and
enqueues. Such a package lists its heavy names here instead:

    if TYPE_CHECKING:  # what type checkers and readers see
        from mailer.delivery.deliver import DeliveryContext, deliver_batch

    __getattr__ = lazy_exports(__name__, {"mailer.delivery.deliver": ["DeliveryContext", ...]})

`from mailer.delivery import deliver_batch` and `mailer.delivery.deliver_batch` work as before;
the module is imported the first time either runs. Tests check that what they list is there.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, modules: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each name imported from its module on first use."""
    module_of = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:  # called only for names the package does not define
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    return __getattr__
