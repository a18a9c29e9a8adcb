"""Running the kit inside offline Kaggle kernels: the competitions' paths (`paths`), the bundle of
wheels a kernel installs from (`package`), and a projection of a kernel's run time against the
competitions' limit (`estimate`). The notebooks themselves live in ``kaggle_notebooks/``."""
