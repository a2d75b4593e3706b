"""realbogus: real/bogus classification for image-subtraction transient surveys.

Reproduces and extends Takahashi et al. 2022 (PASJ 74, 946), "Deep-learning real/bogus
classification for the Tomo-e Gozen transient survey".
"""

import os as _os


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up messages out of the commands' output.

    Warnings are always hidden. On a machine without an NVIDIA device, TensorFlow's GPU probe
    logs ``failed call to cuInit ... UNKNOWN ERROR (303)`` as an error although nothing failed,
    so errors are hidden there too; where a GPU exists it is still used and its errors shown.
    A value the user set is kept.
    """
    gpu = _os.path.exists("/dev/nvidia0") or _os.path.exists("/proc/driver/nvidia")
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if gpu else "3")


_quiet_tensorflow()
__version__ = "0.1.0"
