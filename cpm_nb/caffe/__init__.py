"""The released CPM Caffe models: reading, converting and running them without Caffe."""
