"""medlabel: de-identify, label, verify and learn from medical images."""

__version__ = "0.1.0"
