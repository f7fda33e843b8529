"""How requests arrive: the REST routes of each dialect (native, TF Serving, Open Inference Protocol v2
and its repository extension, health, the explorer page) with their middlewares, and the gRPC server
with its servicers. Each reads the wire, names the model version, and hands the pipeline its codec."""
