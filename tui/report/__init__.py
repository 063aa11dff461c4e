"""The report: `diffbench report` (`command.py`) and `write_report` (`write.py`) over the
numbers as table cells (`tables.py`), the figures (`figures.py`, matplotlib) and the
Markdown/HTML documents (`document.py`)."""
