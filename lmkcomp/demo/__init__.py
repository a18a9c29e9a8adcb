"""`lmkcomp demo`: the kit end to end on the synthetic mini-GLDv2 (see `lmkcomp.demo.run`)."""

from lmkcomp.demo.run import DemoRow, format_table, run_demo

__all__ = ["DemoRow", "format_table", "run_demo"]
