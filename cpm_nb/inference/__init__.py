"""Running a trained model on any image, and exporting it."""
