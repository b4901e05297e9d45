"""File writing shared by ``rendering``, ``models`` and ``pipeline``.

A package of its own because all three write files and none may hold code for the others:
``models`` never imports ``rendering`` (a trained model runs where Mitsuba is absent) and
``rendering`` never imports ``models``. It imports nothing but the standard library.
"""
