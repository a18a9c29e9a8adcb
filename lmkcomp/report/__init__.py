"""The demo's offline HTML report: an ablation table, plots and image galleries."""
