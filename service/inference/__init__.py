"""The data plane's one path, REST and gRPC alike: look the version up once, admit, read and decode the
body, check the request against the model, turn images or tensors into the model input, run it through
the batcher (or the bounded feature-map and explanation calls), and encode the answer."""
