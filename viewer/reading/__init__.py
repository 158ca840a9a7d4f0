"""A reading that lasts (no Qt): measurements and key images saved as DICOM objects (GSPS, SR, KOS), the reader's
calibrations, prior studies and hanging protocols.  :mod:`viewer.ui` adapts these with signals and workers."""
