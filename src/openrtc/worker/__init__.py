"""The running worker: the server link, the job runner and the call entrypoint."""
