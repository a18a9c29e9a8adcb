"""GLDv2 data: layouts and CSVs (`gldv2`, `layout`), image loading (`images`), the torch
`Dataset` (`dataset`), the synthetic mini-GLDv2 (`synthetic`, `scenes`) and the import of a
user's photo folders (`folders`). Submodules are imported on demand: torch only loads with
`dataset`."""
