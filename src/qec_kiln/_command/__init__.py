"""The ``qec-kiln`` command: one ``_main_<verb>.py`` per verb, chosen by ``_main``."""
