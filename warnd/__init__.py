"""warnd: early-warning dispatch for the 631 warning and call-back (叫应) chain."""

__version__ = "0.1.0"
