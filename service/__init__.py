"""REST serving of the SavedModels that ``models`` exported (native, TF Serving and v2 APIs)."""
