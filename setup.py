"""Only the C part of the build; everything else is in pyproject.toml.

``relay/server/_datapath.c`` is the relay's recvmmsg/sendmmsg packet loop. It is optional: if it
cannot be compiled (no compiler or Python headers), the install still succeeds and the relay
runs its pure Python path (``relay/server/datapath.py`` says which one is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "relay.server._datapath",
            ["relay/server/_datapath.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
