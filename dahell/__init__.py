"""dahell: a live, searchable copy of the Dropi product catalog."""

__version__ = "0.1.0"
