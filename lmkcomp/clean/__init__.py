"""Cleaning the noisy train labels: each method takes (id, landmark_id) rows plus what it needs
(embeddings, verified pairs) and returns a `CleaningResult`; `report` writes train_clean.csv,
the removals with their reasons, and (when ground truth exists) precision / recall."""
