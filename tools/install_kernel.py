"""Register this virtual environment as the Jupyter kernel the notebooks name: ``dltrack``
("Python 3 (dltrack)"), inside the venv (``--sys-prefix``), so JupyterLab, the tests and
``make demo`` all run the notebooks with the project's packages.

One setting differs from ``python -m ipykernel install``: ``--IPKernelApp.capture_fd_output=False``.
ipykernel normally copies everything written to the process's file descriptors 1 and 2 into the
notebook, which puts the C++ start-up logs of TensorFlow ("Could not find cuda drivers", "failed
call to cuInit", oneDNN notices) under the first cell of every notebook; no learner can act on
them. With it, output from C code goes to the terminal that runs JupyterLab, and everything
Python prints, warns or logs still shows in the notebook.

    .venv/bin/python tools/install_kernel.py        # make setup runs it
"""

from __future__ import annotations

import sys
import tempfile

from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager

NAME = "dltrack"
DISPLAY_NAME = "Python 3 (dltrack)"


def main() -> int:
    """Write the kernel spec and install it into ``sys.prefix``; print where it went."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_kernel_spec(
            f"{tmp}/{NAME}",
            overrides={"display_name": DISPLAY_NAME},
            extra_arguments=["--IPKernelApp.capture_fd_output=False"],
            python_arguments=["-Xfrozen_modules=off"],  # as ipykernel's own installer: debugger
        )
        path = KernelSpecManager().install_kernel_spec(spec, NAME, prefix=sys.prefix)
    print(f"installed kernel {NAME!r} ({DISPLAY_NAME}) in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
