"""service-builder adapter: reconciles MLflow production models into KServe InferenceServices."""
