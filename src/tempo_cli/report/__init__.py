"""Run outputs: the run folder (config.json, metrics.json, TensorBoard, PNG plots) and progress."""
