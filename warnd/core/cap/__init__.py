"""CAP 1.0/1.1/1.2 messages: the frozen values (``model``) and the hardened parser (``parser``).

``warnd.core.cap.parse(data)`` is the way in; everything else reads ``Alert`` and its properties.
"""

from warnd.core.cap.model import (
    SEVERITY_RANK,
    Alert,
    Area,
    Circle,
    Geocode,
    Info,
    Reference,
    Severity,
)
from warnd.core.cap.parser import (
    ENUMS,
    MAX_BYTES,
    NAMESPACES,
    SCHEMA_FILES,
    XMLDSIG_NS,
    parse,
    parse_file,
    summary,
)

__all__ = [
    "ENUMS",
    "MAX_BYTES",
    "NAMESPACES",
    "SCHEMA_FILES",
    "SEVERITY_RANK",
    "XMLDSIG_NS",
    "Alert",
    "Area",
    "Circle",
    "Geocode",
    "Info",
    "Reference",
    "Severity",
    "parse",
    "parse_file",
    "summary",
]
