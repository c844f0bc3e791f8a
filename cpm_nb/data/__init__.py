"""The data: MPII annotations, synthetic people, crops, TFRecord shards, batches."""
