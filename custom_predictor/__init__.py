"""Generic MLflow model predictor: one image serves any registered model with a typed API."""
