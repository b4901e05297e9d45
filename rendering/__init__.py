"""Mitsuba 3 rendering: environment maps, reflectance maps (refmaps), materials, objects and
the image → refmap conversion. Never imports ``models``."""
