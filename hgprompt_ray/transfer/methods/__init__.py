"""The registry of transfer methods: one module per method (see ``registry``).

Each member module declares its method with :func:`register_method`; :func:`registered` imports
every module of this package, so adding a method is one new file (and its test). Evaluation, the
report and the command line read the registry; no other list of method names exists.
"""

from hgprompt_ray.transfer.methods.registry import (
    ALLOWED_READS,
    PROTOCOLS,
    MethodKind,
    TransferMethod,
    get_method,
    method_names,
    register_method,
    registered,
)

__all__ = [
    "ALLOWED_READS",
    "PROTOCOLS",
    "MethodKind",
    "TransferMethod",
    "get_method",
    "method_names",
    "register_method",
    "registered",
]
