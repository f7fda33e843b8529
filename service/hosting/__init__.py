"""The model owners: the read-only model table (:mod:`.table`), the reconciler that alone changes it
(scanning the repository, policies, config file, labels, load, swap, retire), the loader and the loaded
model, the engines and the planner that picks one per version, the dynamic batcher, and the host that
owns them all, with their threads, for the app's life."""
