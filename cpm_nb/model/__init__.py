"""The network: the CPM layer table, the Keras model, receptive fields, the heat-map codec,
VGG-19's ImageNet weights for the trunk."""
