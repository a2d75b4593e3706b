"""realbogus: real/bogus classification for image-subtraction transient surveys.

Reproduces and extends Takahashi et al. 2022 (PASJ 74, 946), "Deep-learning real/bogus
classification for the Tomo-e Gozen transient survey".
"""

__version__ = "0.1.0"
