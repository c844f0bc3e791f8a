"""File formats: TFRecord framing, the protobuf wire format, images."""
