"""The execution engine: claims queued jobs and runs their attempts on an event loop."""
