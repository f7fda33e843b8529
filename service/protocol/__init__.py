"""What every transport says about the models, REST and gRPC alike: the data plane handed to both
servers, access checks (API key, model control), and the status views of each protocol (model
metadata, version status, signature defs, the repository index). Below the transports, above the
pipeline and the model table; it never imports a route or a servicer."""
