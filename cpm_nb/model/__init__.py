"""The network: the CPM layer table, the Keras model, receptive fields, the heat-map codec."""
