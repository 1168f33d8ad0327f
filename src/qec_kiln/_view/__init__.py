"""Seeing a sweep: ``qec-kiln watch`` (a live page), ``plot`` and ``report``.

``data`` reads the bucket (the only module here that imports qec-kiln's private modules),
``state`` turns a read into the page's JSON, ``plot`` draws with sinter's own plotting,
``server`` serves the page, ``report`` writes it as one file and ``cli`` has the commands.
"""
